"""One long-lived runtime per function: the launcher interface (:mod:`.launch`), the manager
that starts, watches, restarts and replaces runtimes (:mod:`.manager`), and what each is doing
with the restart policy (:mod:`.state`)."""
