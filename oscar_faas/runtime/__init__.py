"""The long-lived function runtime: the OSCAR I/O contract over HTTP, with warm workers."""
