"""Read a ``jobmonitor.toml``: server settings and program projects.

::

    [server]                      # any Config field, spelled as the field
    port = 7400
    max_running = 4

    [projects."Build Docs"]       # any number of program projects
    command = ["make", "-C", "{dir}", "html"]
    variables = ["dir"]

    [projects.render]             # variables as a table: each with its rules
    command = ["render", "{output_dir}/{name}"]
    output_dir = "renders"
    [projects.render.variables.name]
    kind = "name"
    pattern = "[a-z0-9_-]{1,40}[.]pdf"

    [users.ann]                   # users who may connect (Config.users)
    password_hash = "scrypt$..."  # from `jobmonitor hash-password`
    role = "admin"

    [queues.reports]              # a queue's own limit, or paused (Config.queues)
    max_running = 2

    [schedules.nightly]           # a recurring job (Config.schedules)
    cron = "0 2 * * *"
    project = "render"
    variables = { name = "nightly.pdf" }

The keys and their types come from the ``Config``, ``Program``, ``Variable``,
``User``, ``QueueSettings`` and ``ScheduleSettings`` dataclasses, so no option
list is spelled out here.  Every unknown key and bad value is a ``ConfigError``
that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config
from .errors import ConfigError
from .programs.program import SELF_CHECKED, Program, Variable
from .queueing import QueueSettings, ScheduleSettings
from .users import User

__all__ = ["ConfigFile", "load_config_file"]

#: The keys of a project table: Program's fields but its name and what it works out.
_PROGRAM_KEYS = {f.name: str(f.type) for f in dataclasses.fields(Program)
                 if f.init and f.name != "project"}
#: The keys of a variable's table (``[projects.x.variables.name]``).
_VARIABLE_KEYS = {f.name: str(f.type) for f in dataclasses.fields(Variable) if f.init}


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """What a config file holds: settings over the defaults, and program projects."""

    path: str
    config: Config
    programs: tuple[Program, ...]


def load_config_file(path: str | Path) -> ConfigFile:
    """Read and check a TOML config file.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or has an unknown
        key or a bad value (the message names the key).
    """
    name = str(path)
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    try:
        _check_keys(data, {"server", "projects", "users", "queues", "schedules"}, "")
        config = _server(_table(data.get("server", {}), "server"))
        users = _table(data.get("users", {}), "users")
        if users:
            config = config.replace(users=tuple(
                _user(name, _table(table, _key("users", name))) for name, table in users.items()))
        config = _queues_and_schedules(config, data)
        projects = _table(data.get("projects", {}), "projects")
        programs = tuple(_program(project, _table(table, _key("projects", project)))
                         for project, table in projects.items())
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return ConfigFile(name, config, programs)


def _server(table: dict[str, Any]) -> Config:
    fields = {f.name: str(f.type) for f in dataclasses.fields(Config) if f.metadata.get("flag")}
    _check_keys(table, set(fields), "server")
    changes = {key: _value(value, fields[key], f"server.{key}") for key, value in table.items()}
    try:
        return Config().replace(**changes)
    except ConfigError as exc:
        raise ConfigError(f"server.{exc}") from None


def _program(project: str, table: dict[str, Any]) -> Program:
    where = _key("projects", project)
    _check_keys(table, set(_PROGRAM_KEYS), where)
    if "command" not in table:
        raise ConfigError(f"{where}.command: missing (every program project needs one)")
    # The job options (and kill_grace_s) go to Program as they are: it checks them
    # (type too) in add_job's words, so a bad value reads the same here and in Python.
    values = {key: value if key in SELF_CHECKED else _value(value, _PROGRAM_KEYS[key],
                                                            f"{where}.{key}")
              for key, value in table.items() if key != "variables"}
    if "variables" in table:
        values["variables"] = _variables(table["variables"], f"{where}.variables")
    try:
        return Program(project, **values)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None


def _variables(value: Any, where: str) -> tuple[str, ...] | dict[str, Variable]:
    """A project's variables: a list of names, or a table of each name's rules."""
    if not isinstance(value, dict):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where}: must be a list of names or a table of variables, "
                              f"got {value!r}")
        return tuple(value)
    rules = {}
    for name, table in value.items():
        at = _key(where, name)
        _check_keys(_table(table, at), set(_VARIABLE_KEYS), at)
        values = {key: _value(item, _VARIABLE_KEYS[key], f"{at}.{key}")
                  for key, item in table.items()}
        try:
            rules[name] = Variable(**values)
        except ConfigError as exc:
            raise ConfigError(f"{at}.{exc}") from None
    return rules


def _user(name: str, table: dict[str, Any]) -> User:
    where = _key("users", name)
    fields = {f.name: str(f.type) for f in dataclasses.fields(User) if f.name != "name"}
    _check_keys(table, set(fields), where)
    if "password_hash" not in table:
        raise ConfigError(f"{where}.password_hash: missing (make one with "
                          "`jobmonitor hash-password`)")
    values = {key: _value(value, fields[key], f"{where}.{key}") for key, value in table.items()}
    return User(name, **values)


def _queues_and_schedules(config: Config, data: dict[str, Any]) -> Config:
    """``config`` with the file's ``[queues.NAME]`` and ``[schedules.NAME]`` tables."""
    queues = tuple(_settings_table(QueueSettings, "queues", name, table)
                   for name, table in _table(data.get("queues", {}), "queues").items())
    schedules = tuple(_settings_table(ScheduleSettings, "schedules", name, table)
                      for name, table in _table(data.get("schedules", {}), "schedules").items())
    return config.replace(queues=queues or None, schedules=schedules or None)


def _settings_table(kind: Any, where: str, name: str, value: Any) -> Any:
    """A ``QueueSettings`` or ``ScheduleSettings`` from its table, each key checked."""
    at = _key(where, name)
    table = _table(value, at)
    fields = {f.name: str(f.type) for f in dataclasses.fields(kind) if f.init and f.name != "name"}
    _check_keys(table, set(fields), at)
    for required in ("cron", "project") if kind is ScheduleSettings else ():
        if required not in table:
            raise ConfigError(f"{at}.{required}: missing")
    values = {key: _value(item, fields[key], f"{at}.{key}") for key, item in table.items()}
    try:
        return kind(name, **values)
    except ConfigError as exc:
        raise ConfigError(f"{at}.{exc}") from None


def _check_keys(table: dict[str, Any], known: set[str], where: str) -> None:
    """Raises: ConfigError: ``unknown key server.prot (did you mean server.port?)
    (known: ...)``: each unknown key, with the nearest known one if any is close."""
    unknown = sorted(set(table) - known)
    if unknown:
        keys = ", ".join(_key(where, key) + _suggestion(key, known, where) for key in unknown)
        raise ConfigError(f"unknown key {keys} (known: {', '.join(sorted(known))})")


def _suggestion(key: str, known: set[str], where: str) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {_key(where, close[0])}?)" if close else ""


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table")
    return value


def _key(where: str, key: str) -> str:
    """A dotted key as TOML spells it: ``projects."Build Docs"``."""
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    shown = key if bare else '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{where}.{shown}" if where else shown


def _value(value: Any, type_name: str, where: str) -> Any:
    """Check a TOML value against a dataclass field's type; return it as the field wants it."""
    base = type_name.removesuffix(" | None")
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base == "str":
        ok = isinstance(value, str)
    elif base == "tuple[str, ...]":
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        value = tuple(value) if ok else value
    elif base == "Mapping[str, str]":
        ok = isinstance(value, dict) and all(isinstance(item, str) for item in value.values())
    else:
        ok = True  # a type this reader does not know: the dataclass checks it
    if not ok:
        raise ConfigError(f"{where}: must be {_DESCRIPTIONS.get(base, base)}, got {value!r}")
    return value


_DESCRIPTIONS = {
    "bool": "true or false",
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "tuple[str, ...]": "a list of strings",
    "Mapping[str, str]": "a table of strings",
}
