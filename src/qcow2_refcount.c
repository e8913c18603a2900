/* qcow2_refcount.c: in progress */
