/* qcow2_header.c: in progress */
