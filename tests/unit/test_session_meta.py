"""The session's metadata is typed: every key effmon itself writes is a field of SessionMeta (a reader names a
field, never a string), a plugin's own keys are kept in ``extra``, and nothing is lost between the two forms."""

import os
import sys

from effmon.core.meta import KNOWN, SessionMeta
from effmon.core.store import SessionReader
from effmon.recording import RecordOptions, record_command


def test_a_replayed_session_writes_only_known_keys(phases_session):
    with SessionReader(phases_session) as r:
        meta = r.session_meta()
        raw = r.meta()
    assert meta.extra == {}, f"keys effmon writes that SessionMeta does not know: {sorted(meta.extra)}"
    assert meta.name == "phases" and meta.mode == "replay" and meta.status == "complete"
    assert meta.gpus and meta.gpus[0]["name"].startswith("NVIDIA H100")
    assert meta.to_dict() == {k: v for k, v in raw.items() if v is not None}


def test_a_recorded_command_writes_only_known_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFMON_HOME", str(tmp_path / "home"))
    options = RecordOptions(name="cmd", quiet=True, sources=("host",), host_s=0.1)
    assert record_command([sys.executable, "-c", "import time; time.sleep(0.3)"], options) == 0
    with SessionReader(tmp_path / "home" / "sessions" / "cmd.effmon") as r:
        meta = r.session_meta()
    assert meta.extra == {}, sorted(meta.extra)
    assert meta.exit_code == 0 and meta.command and meta.launched and meta.cwd == os.getcwd()


def test_a_plugins_own_keys_are_kept_apart_and_round_trip():
    raw = {"name": "s", "status": "complete", "fans": 4, "my_plugin": {"x": 1}}
    meta = SessionMeta.from_dict(raw)
    assert meta.name == "s" and meta.extra == {"fans": 4, "my_plugin": {"x": 1}}
    assert meta.to_dict() == raw
    assert "fans" not in KNOWN and "status" in KNOWN
