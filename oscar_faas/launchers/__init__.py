"""Where a function's runtime process runs: on this host as an isolated user (:mod:`.host`),
or in a container of its image (:mod:`.containers`). The provider's runtime manager drives
them through the :class:`~.launch.Launcher` interface (:mod:`.launch`); nothing here imports
the provider, as in OpenFaaS the backend that starts functions is not faas-provider."""
