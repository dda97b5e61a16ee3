"""One long-lived runtime per function: the manager that starts, watches, restarts and
replaces runtimes through a launcher (:mod:`oscar_faas.launchers`), and what each is doing
with the restart policy (:mod:`.state`)."""
