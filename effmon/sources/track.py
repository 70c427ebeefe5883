"""Steps reported from inside watched processes (``effmon.track``, the transformers integration).

Tails the JSON-lines files instrumented processes write, from their first line: attaching late
loses nothing. With ``effmon run`` every process of the run writes into the session's own track
directory (all ranks of a torchrun job); otherwise the files of the watched process trees are read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from effmon.core.declare import Row
from effmon.core.source import SourceInfo, SourceOptions
from effmon.track import track_path

STEP_FIELDS = ("step", "tokens", "samples", "loss", "lr", "grad_norm", "epoch", "comm_s", "phase")


class TrackSource:
    name = "track"

    def __init__(self, options: SourceOptions):
        self.options = options
        self._dirs: dict[int, str] = {}
        self.channels = {"events": 0.5}
        self.offsets: dict[str, int] = {}
        self.held: dict[str, dict[str, Any]] = {}  # the last step of each file waits for its log line
        self.phase: dict[str, tuple[str, float]] = {}
        self.last_t: dict[str, float] = {}
        self.ranks: dict[str, dict[str, Any]] = {}

    def open(self) -> SourceInfo:
        return SourceInfo()

    def _files(self) -> list[str]:
        directory = self.options.extra.get("track_dir")  # set by effmon run once the session exists
        if directory:
            return sorted(str(p) for p in Path(directory).glob("*.jsonl"))
        import psutil

        pids: set[int] = set()
        for pid in self.options.watched_pids():
            pids.add(pid)
            try:
                pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return [p for p in (track_path(pid, self._dir_of(pid)) for pid in sorted(pids)) if os.path.exists(p)]

    def _dir_of(self, pid: int) -> str | None:
        """A process started by ``effmon run`` writes where its own EFFMON_TRACK_DIR says."""
        if pid not in self._dirs:
            import psutil

            try:
                self._dirs[pid] = psutil.Process(pid).environ().get("EFFMON_TRACK_DIR", "")
            except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                self._dirs[pid] = ""
        return self._dirs[pid] or None

    def read(self, channel: str, now: float) -> list[Row]:
        rows: list[Row] = []
        for path in self._files():
            for event in self._new_events(path):
                rows.extend(self._event(path, event))
        for path, ev in list(self.held.items()):
            if now - ev.get("t_end", now) > 2.0:  # no log line came for it: release it as it is
                rows += self._release(path)
        return rows

    def _new_events(self, path: str) -> list[dict[str, Any]]:
        offset = self.offsets.get(path, 0)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []  # only a partial line so far
        self.offsets[path] = offset + end + 1
        events = []
        for line in data[: end + 1].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a torn line from a crashed process: skip it, keep the rest
            if isinstance(event, dict):
                events.append(event)
        return events

    def _event(self, path: str, ev: dict[str, Any]) -> list[Row]:
        kind = ev.get("kind")
        out: list[Row] = []
        if kind == "train_step":
            out += self._release(path)
            self.held[path] = ev
            self.last_t[path] = ev.get("t_end", 0.0)
        elif kind == "log":
            held = self.held.get(path)
            if held is not None and held.get("step") == ev.get("step"):
                for key in ("loss", "lr", "grad_norm", "epoch"):
                    if key in ev and ev[key] is not None:
                        held[key] = ev[key]
                out += self._release(path)
        elif kind == "model":
            info = {k: v for k, v in ev.items() if k not in ("kind", "t")}
            out.append(Row("meta", {"model": info}))
        elif kind == "start":
            self.ranks[path] = {
                k: ev.get(k) for k in ("pid", "rank", "local_rank", "world_size", "cuda_visible_devices")
            }
            out.append(Row("meta", {"ranks": sorted(self.ranks.values(), key=lambda r: r.get("rank") or 0)}))
        elif kind == "phase":
            out += self._close_phase(path, ev["t"])
            self.phase[path] = (str(ev.get("name")), float(ev["t"]))
        elif kind == "dropped":
            out.append(Row("meta", {"track_dropped_events": ev.get("count")}))
        return out

    def _release(self, path: str) -> list[Row]:
        ev = self.held.pop(path, None)
        if ev is None:
            return []
        values = {"t_start": ev["t_start"], "t_end": ev["t_end"], "rank": ev.get("rank", 0)}
        values.update({k: ev.get(k) for k in STEP_FIELDS})
        if values["phase"] is None and path in self.phase:
            values["phase"] = self.phase[path][0]
        return [Row("train_step", values)]

    def _close_phase(self, path: str, t_end: float) -> list[Row]:
        if path not in self.phase:
            return []
        name, t_start = self.phase.pop(path)
        return [Row("phase", {"t_start": t_start, "t_end": t_end, "name": name})]

    def close(self) -> None:
        """At the end of the session: whatever is held goes out (the sampler's final read collects it)."""

    def drain(self) -> list[Row]:
        rows: list[Row] = []
        for path in list(self.held):
            rows += self._release(path)
        for path in list(self.phase):
            rows += self._close_phase(path, self.last_t.get(path, self.phase[path][1]))
        return rows
