/* qcow2_map.c: in progress */
