"""oscar-faas: an OSCAR-compatible serverless gateway whose backend is OpenFaaS."""

__version__ = "0.1.0"

#: The OSCAR version whose API we speak; the dashboard gates features on it.
OSCAR_API_VERSION = "v3.6.4"
