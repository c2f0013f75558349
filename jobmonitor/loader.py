"""Load ``JobMonitor`` objects from ``--jobs`` specs.

A spec is ``pkg.module``, ``pkg.module:attr``, ``path/to/file.py`` or
``path/to/file.py:attr``; the attribute defaults to ``app`` and must be a
``JobMonitor``.  Every failure is a ``ConfigError`` that names the spec.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType

from .engine.handlers import Handler
from .engine.registry import HandlerRegistry
from .errors import ConfigError

__all__ = ["load_handlers", "load_app"]


def load_app(spec: str, *, reload: bool = False) -> HandlerRegistry:
    """Import the ``JobMonitor`` a spec names.

    Raises:
        ConfigError: the module or attribute is missing, fails to import, or is
        not a ``JobMonitor``.
    """
    target, _, attr = spec.partition(":")
    attr = attr or "app"
    if not target:
        raise ConfigError(f"--jobs {spec!r}: no module or file named")
    if target.endswith(".py"):
        module = _import_file(spec, Path(target))
    else:
        module = _import(spec, target, reload=reload)
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"--jobs {spec!r}: {target} has no attribute {attr!r}") from None
    if not isinstance(app, HandlerRegistry):
        raise ConfigError(
            f"--jobs {spec!r}: {target}:{attr} is a {type(app).__name__}, not a JobMonitor"
        )
    return app


def load_handlers(specs: Iterable[str], base: Mapping[str, Handler] | None = None, *,
                  reload: bool = False) -> dict[str, Handler]:
    """The handlers of ``base`` plus those of every spec's ``JobMonitor``.

    ``reload`` re-imports modules that were imported before (files are always
    executed afresh).

    Raises:
        ConfigError: a spec cannot be loaded, or a project is registered twice.
    """
    handlers = dict(base or {})
    for spec in specs:
        for name, handler in load_app(spec, reload=reload).handlers.items():
            if name in handlers:
                raise ConfigError(f"--jobs {spec!r}: job {name!r} is registered twice")
            handlers[name] = handler
    return handlers


def _import(spec: str, name: str, *, reload: bool) -> ModuleType:
    try:
        if reload and name in sys.modules:
            return importlib.reload(sys.modules[name])
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ConfigError(f"--jobs {spec!r}: no module named {exc.name!r}") from None
        raise ConfigError(f"--jobs {spec!r}: importing {name} failed: {exc}") from exc
    except Exception as exc:
        raise ConfigError(f"--jobs {spec!r}: importing {name} failed: {exc!r}") from exc


def _import_file(spec: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"--jobs {spec!r}: no such file {str(path)!r}")
    name = f"jobmonitor_jobs_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"--jobs {spec!r}: cannot load {str(path)!r}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"--jobs {spec!r}: loading {str(path)!r} failed: {exc!r}") from exc
    return module
