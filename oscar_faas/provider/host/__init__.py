"""host: see the modules."""
