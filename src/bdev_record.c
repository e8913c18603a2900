/* bdev_record.c: recording device for crash replay (in progress) */
