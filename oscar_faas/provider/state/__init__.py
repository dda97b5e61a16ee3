"""state: see the modules."""
