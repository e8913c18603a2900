/* qcow2_rw.c: in progress */
