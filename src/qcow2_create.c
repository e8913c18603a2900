/* qcow2_create.c: in progress */
