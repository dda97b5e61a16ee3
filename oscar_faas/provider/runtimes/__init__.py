"""runtimes: see the modules."""
