"""containers: see the modules."""
