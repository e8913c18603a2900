/* bdev_fault.c: fault-injecting device (in progress) */
