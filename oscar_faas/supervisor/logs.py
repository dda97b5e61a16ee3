"""Per-invocation logging with the function's own level, without touching global loggers.

The embedded provider runs functions with different ``LOG_LEVEL`` s in threads of one process,
so the level cannot live on a shared ``logging.Logger``. :class:`SupervisorLog` filters by the
invocation's level and hands records straight to the given logger's handlers.
"""

from __future__ import annotations

import logging
import sys

#: OSCAR's faas-supervisor format, so function logs read the same.
LOG_FORMAT = "%(asctime)s - supervisor - %(levelname)s - %(message)s"


def stderr_logger() -> logging.Logger:
    """A private logger writing to the current ``sys.stderr``.

    Built directly (not via ``logging.getLogger``), so it is not registered globally and does
    not propagate to the root logger.
    """
    logger = logging.Logger("supervisor")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    return logger


class SupervisorLog:
    """Logs to ``logger`` the messages at or above ``level`` (the function's ``LOG_LEVEL``)."""

    def __init__(self, logger: logging.Logger, level: int = logging.INFO) -> None:
        self.logger = logger
        self.level = level

    def enabled(self, level: int) -> bool:
        return level >= self.level

    def log(self, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        if not self.enabled(level):
            return
        info = sys.exc_info() if exc_info else None
        record = self.logger.makeRecord(self.logger.name, level, __name__, 0, msg, args, info)
        self.logger.handle(record)

    def debug(self, msg: str, *args: object) -> None:
        self.log(logging.DEBUG, msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self.log(logging.INFO, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> None:
        self.log(logging.ERROR, msg, *args)

    def exception(self, msg: str, *args: object) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=True)
