"""Functions as processes of this host: the host launcher (:mod:`.launcher`), a uid of their
own when the provider is root (:mod:`.isolation`), and the read-only view of an installation
that sits under a folder their uid cannot cross (:mod:`.install_view`)."""
