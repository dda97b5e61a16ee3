"""Functions as containers of their own image through the Docker Engine API (Docker, or
Podman's service): the engine's use (:mod:`.engine`, over :mod:`.engine_api`), what a
container is started with (:mod:`.specs`), the launcher (:mod:`.launcher`) and the static
runtime it mounts into every image (:mod:`.runtime_binary`)."""
