"""The top level exports what the docs promise, and every name it exports exists."""

from __future__ import annotations

import re
from pathlib import Path

import jobmonitor

ROOT = Path(__file__).resolve().parents[2]

#: The public API of ``from jobmonitor import ...`` (README, docs/, examples/).
PUBLIC = {
    "__version__",
    "JobMonitor", "Controller", "Server", "Config",
    "Job", "JobState", "Outcome", "Reply", "Status",
    "JobMonitorError", "ConfigError", "JobFailed", "RequestError", "PacketError",
    "StoreUnavailable", "ReplyError", "ProtocolError",
}


def _documented_names() -> set[str]:
    """Names the docs and examples import from, or spell under, ``jobmonitor``."""
    names = set()
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "examples").glob("*.py"))]
    for path in texts:
        text = path.read_text()
        for imported in re.findall(r"^\s*from jobmonitor import \(?([\w, ]+)\)?", text, re.M):
            names.update(name.strip() for name in imported.split(",") if name.strip())
        names.update(re.findall(r"`jobmonitor\.([A-Z]\w*)`", text))
    return names


def test_all_is_the_public_api():
    assert len(jobmonitor.__all__) == len(set(jobmonitor.__all__))
    assert set(jobmonitor.__all__) == PUBLIC


def test_every_name_the_docs_import_is_exported():
    documented = _documented_names()
    assert {"Job", "JobMonitor", "Outcome", "JobFailed", "ReplyError", "Config"} <= documented
    assert documented <= set(jobmonitor.__all__), documented - set(jobmonitor.__all__)


def test_every_exported_name_exists():
    for name in jobmonitor.__all__:
        assert getattr(jobmonitor, name, None) is not None, name
    namespace: dict[str, object] = {}
    exec("from jobmonitor import *", namespace)
    assert set(jobmonitor.__all__) <= set(namespace)


def test_the_version_is_the_packages():
    from jobmonitor._version import __version__

    assert jobmonitor.__version__ == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
