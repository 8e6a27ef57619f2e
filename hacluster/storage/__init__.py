"""The heartbeat SR: layout, formatting and block I/O on a file or block device."""
