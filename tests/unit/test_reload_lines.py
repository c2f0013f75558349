"""What a reload logs of changed settings: never a store URL's password."""

from __future__ import annotations

from jobmonitor.config import Config
from jobmonitor.server.reloading import changes, settings_to_use

OLD = "postgresql://jm:old-secret@db.example/jobs"
NEW = "postgresql://jm:new-secret@db.example/jobs?schema=press"


def test_a_changed_store_url_is_logged_without_its_password():
    current, fresh = Config(store=OLD), Config(store=NEW)
    kept, warnings = settings_to_use(current, fresh)
    assert kept.store == OLD  # (it needs a restart)
    assert warnings == ["store changed to postgresql://jm:***@db.example/jobs?schema=press but "
                        "needs a restart: still postgresql://jm:***@db.example/jobs"]
    lines = changes(current, fresh, (), ())
    assert lines == ["store changed from postgresql://jm:***@db.example/jobs to "
                     "postgresql://jm:***@db.example/jobs?schema=press"]
    # (a URL without a password, and any other setting, as it is)
    assert changes(Config(store="sqlite:///a.db"), Config(store="sqlite:///b.db"), (), ()) == [
        "store changed from sqlite:///a.db to sqlite:///b.db"]
