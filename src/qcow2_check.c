/* qcow2_check.c: in progress */
