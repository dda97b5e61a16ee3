"""oscar-faas: an OSCAR-compatible serverless gateway whose backend is OpenFaaS."""

from pathlib import Path

__version__ = "0.1.0"

#: The folder holding the ``oscar_faas`` package: a source checkout's root (with
#: ``function-templates/``), or the site-packages an installation lives in. Modules at any depth
#: use this one fact instead of counting their own parent folders.
SOURCE_ROOT = Path(__file__).resolve().parent.parent

#: The OSCAR version whose API we speak; the dashboard gates features on it.
OSCAR_API_VERSION = "v3.6.4"
