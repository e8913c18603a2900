/* qcow2_cache.c: in progress */
