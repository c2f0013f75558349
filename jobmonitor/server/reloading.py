"""What a reload (SIGHUP, ``RestartServer``) changes, in words for the log.

The server asks its reload callback for fresh settings and handlers
(``Reloaded``); the settings it cannot change while it runs
(``config.NEEDS_RESTART``) keep their old values, with a warning, and the rest
take effect.  Nothing here applies anything: it works out the settings to use
and the lines that say what changed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..config import NEEDS_RESTART, Config
from ..engine.handlers import Handler
from ..users import User

__all__ = ["Reloaded", "settings_to_use", "changes"]

#: The password in ``scheme://user:password@host`` (a store URL).
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload read afresh: the settings, and the handlers to run from then on."""

    config: Config
    handlers: Mapping[str, Handler]


def settings_to_use(current: Config, fresh: Config) -> tuple[Config, list[str]]:
    """``fresh``, but for the settings that need a restart, which keep their
    ``current`` values; and a warning for each of those that ``fresh`` changes."""
    kept = {name: getattr(current, name) for name in NEEDS_RESTART
            if getattr(fresh, name) != getattr(current, name)}
    warnings = [f"{name} changed to {_shown(getattr(fresh, name))} but needs a restart: "
                f"still {_shown(value)}" for name, value in kept.items()]
    return dataclasses.replace(fresh, **kept), warnings


def changes(current: Config, new: Config, projects: Iterable[str],
            new_projects: Iterable[str]) -> list[str]:
    """One line per change from ``current`` to ``new`` (users by name only: a
    hash is never shown) and per project added or removed."""
    lines = []
    for field in dataclasses.fields(Config):
        before, after = getattr(current, field.name), getattr(new, field.name)
        if field.name != "users" and before != after:
            lines.append(f"{field.name} changed from {_shown(before)} to {_shown(after)}")
    lines += _user_changes(current.users, new.users)
    old, fresh = set(projects), set(new_projects)
    lines += [f"project {name!r} added" for name in sorted(fresh - old)]
    lines += [f"project {name!r} removed" for name in sorted(old - fresh)]
    return lines


def _user_changes(before: tuple[User, ...], after: tuple[User, ...]) -> list[str]:
    old = {user.name: user for user in before}
    new = {user.name: user for user in after}
    lines = [f"user {name!r} added ({new[name].role})" for name in new if name not in old]
    lines += [f"user {name!r} removed" for name in old if name not in new]
    for name in sorted(new.keys() & old.keys()):
        if new[name].role != old[name].role:
            lines.append(f"user {name!r} is now {new[name].role}")
        if new[name].password_hash != old[name].password_hash:
            lines.append(f"user {name!r} has a new password")
    return lines


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, str):  # (a store URL's password stays out of the log)
        return _URL_PASSWORD.sub(r"\1:***@", value)
    return "none" if value is None else str(value)
