"""The Redis-outage spool: records, one directory, the process's spool, the drain."""
