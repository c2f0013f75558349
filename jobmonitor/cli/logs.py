"""The log of ``jobmonitor serve``: text lines, or one JSON object a line.

Only the CLI configures logging (the library only logs).  The text form is
``TIME LEVEL LOGGER: MESSAGE``.  The JSON form (``--log-format json``) has
``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger`` and ``message``,
then the fields a record carries as ``record.fields`` (a refusal's ``event``,
``peer``, ``user``, ``command``, ...), and ``exception`` with a traceback.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

from ..errors import ConfigError

__all__ = ["setup_logging", "check_level", "JsonFormatter"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The keys every JSON line starts with (a record's fields cannot replace them).
_BASE_KEYS = ("time", "level", "logger", "message")


class JsonFormatter(logging.Formatter):
    """One JSON object a line, in ASCII (so a line can never be split or mangled
    by what a peer sent)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update((key, value) for key, value in fields.items() if key not in _BASE_KEYS)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class _ReadyOrLevel(logging.Filter):
    """Passes records at the chosen level, and always the 'listening on' line."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or getattr(record, "ready", False)


def check_level(level_name: str) -> int:
    """The logging level a ``log_level`` setting names.

    Raises:
        ConfigError: an unknown level.
    """
    level = logging.getLevelName(level_name.upper())
    if not isinstance(level, int):
        raise ConfigError(f"log_level: unknown level {level_name!r}")
    return level


def setup_logging(level_name: str, log_format: str = "text") -> None:
    """Log to standard error at ``level_name`` in ``log_format`` (again on a reload:
    the handler is replaced).

    Raises:
        ConfigError: an unknown level.
    """
    level = check_level(level_name)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_ReadyOrLevel(level))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("jobmonitor.server").setLevel(min(level, logging.INFO))
