"""Steps reported from inside watched processes (``effmon.track``, the transformers integration).

Tails the JSON-lines files instrumented processes write, from their first line: attaching late
loses nothing. With ``effmon run`` every process of the run writes into the session's own track
directory (all ranks of a torchrun job); otherwise the files of the watched process trees are read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from effmon.core.declare import Row
from effmon.core.files import UnsafePath, chain_problem, open_owned
from effmon.core.source import SourceInfo, SourceOptions
from effmon.track import track_location, track_path

STEP_FIELDS = (
    "step",
    "tokens",
    "padded_tokens",
    "samples",
    "loss",
    "lr",
    "grad_norm",
    "epoch",
    "comm_s",
    "comm_busy_s",
    "phase",
)


RANK_FIELDS = ("pid", "rank", "local_rank", "world_size", "cuda_visible_devices", "run_id", "node_rank", "host")


class TrackSource:
    name = "track"

    def __init__(self, options: SourceOptions):
        self.options = options
        self._dirs: dict[int, tuple[str, str, int]] = {}
        self.refused: dict[str, str] = {}  # path -> why it is not read
        self._notices: list[str] = []
        self.channels = {"events": 0.5}
        self.offsets: dict[str, int] = {}
        self.held: dict[str, dict[str, Any]] = {}  # the last step of each file waits for its log line
        self.phase: dict[str, tuple[str, float]] = {}
        self.last_t: dict[str, float] = {}
        self.ranks: dict[str, dict[str, Any]] = {}

    def open(self) -> SourceInfo:
        return SourceInfo()

    def _files(self) -> list[tuple[str, int]]:
        """The track files to read, each with the uid that must own it; unsafe places are refused (once, as an
        error notice), never read."""
        directory = self.options.track_dir  # set by effmon run once the session exists
        if directory:
            problem = chain_problem(directory, None, os.geteuid())
            if problem:
                self._refuse(directory, f"refusing to read {problem}")
                return []
            return [(str(p), os.geteuid()) for p in sorted(Path(directory).glob("*.jsonl"))]
        import psutil

        pids: set[int] = set()
        for pid in self.options.watched_pids():
            pids.add(pid)
            try:
                pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        files = []
        for pid in sorted(pids):
            base, folder, uid = self._location(pid)
            path = track_path(pid, folder)
            if not os.path.lexists(path):
                continue
            problem = chain_problem(folder, base, uid)
            if problem:
                self._refuse(path, f"refusing to read {path}: {problem}")
                continue
            files.append((path, uid))
        return files

    def _location(self, pid: int) -> tuple[str, str, int]:
        """Where a watched process writes (its EFFMON_TRACK_DIR, XDG_RUNTIME_DIR or TMPDIR, as its environment
        says) and the uid that owns it."""
        if pid not in self._dirs:
            import psutil

            environ: dict[str, str] | None = None
            uid = os.geteuid()
            try:
                proc = psutil.Process(pid)
                uid = proc.uids().effective
                environ = proc.environ()
            except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                pass
            base, folder = track_location(environ, uid)
            self._dirs[pid] = (base, folder, uid)
        return self._dirs[pid]

    def _refuse(self, key: str, why: str) -> None:
        if key not in self.refused:
            self.refused[key] = why
            self._notices.append(why + "; its steps are not recorded")

    def read(self, channel: str, now: float) -> list[Row]:
        rows: list[Row] = []
        for path, uid in self._files():
            for event in self._new_events(path, uid):
                rows.extend(self._event(path, event))
        for path, ev in list(self.held.items()):
            if now - ev.get("t_end", now) > 2.0:  # no log line came for it: release it as it is
                rows += self._release(path)
        rows += [Row("notice", {"level": "error", "text": f"track: {text}"}) for text in self._notices]
        self._notices.clear()
        return rows

    def _new_events(self, path: str, uid: int) -> list[dict[str, Any]]:
        offset = self.offsets.get(path, 0)
        try:
            fd = open_owned(path, uid)
        except UnsafePath as exc:
            self._refuse(path, str(exc))
            return []
        except OSError:
            return []
        try:
            with os.fdopen(fd, "rb") as f:
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
        handler = self._HANDLERS.get(str(ev.get("kind")))
        return handler(self, path, ev) if handler is not None else []

    def _step(self, path: str, ev: dict[str, Any]) -> list[Row]:
        out = self._release(path)
        self.held[path] = ev
        self.last_t[path] = ev.get("t_end", 0.0)
        return out

    def _log(self, path: str, ev: dict[str, Any]) -> list[Row]:
        held = self.held.get(path)
        if held is None or held.get("step") != ev.get("step"):
            return []
        for key in ("loss", "lr", "grad_norm", "epoch"):
            if key in ev and ev[key] is not None:
                held[key] = ev[key]
        return self._release(path)

    def _model(self, path: str, ev: dict[str, Any]) -> list[Row]:
        info = {k: v for k, v in ev.items() if k not in ("kind", "t")}
        out = [Row("meta", {"model": info})]
        if info.get("precision"):  # MCR's bit width, without --precision
            out.append(Row("meta", {"precision": info["precision"]}))
        return out

    def _plan(self, path: str, ev: dict[str, Any]) -> list[Row]:
        if ev.get("rank"):  # every rank plans the same run: rank 0 says it
            return []
        return [Row("meta", {"plan": {k: ev[k] for k in ("total_steps", "epochs") if ev.get(k) is not None}})]

    def _span(self, path: str, ev: dict[str, Any]) -> list[Row]:
        return [Row("phase", {"t_start": ev.get("t_start"), "t_end": ev.get("t_end"), "name": str(ev.get("name"))})]

    def _phase(self, path: str, ev: dict[str, Any]) -> list[Row]:
        out = self._close_phase(path, ev["t"])
        self.phase[path] = (str(ev.get("name")), float(ev["t"]))
        return out

    def _dropped(self, path: str, ev: dict[str, Any]) -> list[Row]:
        return [Row("meta", {"track_dropped_events": ev.get("count")})]

    def _start(self, path: str, ev: dict[str, Any]) -> list[Row]:
        self.ranks[path] = {k: ev.get(k) for k in RANK_FIELDS}
        ranks = sorted(self.ranks.values(), key=lambda r: r.get("rank") or 0)
        out = [Row("meta", {"ranks": ranks})]
        job = next((r for r in ranks if r.get("run_id")), None)
        if job is not None and (job.get("world_size") or 1) > 1:
            # a torchrun job: the sessions of its nodes (one effmon run per node) are one run
            nodes = sorted({r.get("node_rank") or 0 for r in ranks})
            job_meta = {"run_id": job["run_id"], "world_size": job["world_size"], "node_ranks": nodes}
            out.append(Row("meta", {"job": job_meta}))
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

    _HANDLERS: ClassVar[dict[str, Callable[[TrackSource, str, dict[str, Any]], list[Row]]]] = {
        "train_step": _step,
        "log": _log,
        "model": _model,
        "plan": _plan,
        "start": lambda self, path, ev: self._start(path, ev),
        "span": _span,
        "phase": _phase,
        "dropped": _dropped,
    }


def instrumented_jobs(pid: int) -> list[int]:
    """The separate instrumented jobs below ``pid`` (processes that write a track file, none of whose ancestors
    below ``pid`` does): one when ``pid`` is a job itself, several under a shell, ``init`` or a scheduler."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    writing: set[int] = set()
    for proc in tree:
        try:
            _, folder = track_location(proc.environ(), proc.uids().effective)
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
            continue
        if os.path.lexists(track_path(proc.pid, folder)):
            writing.add(proc.pid)
    if pid in writing:
        return [pid]
    jobs = []
    for proc in tree:
        if proc.pid not in writing:
            continue
        try:
            above = {p.pid for p in proc.parents()}
        except psutil.NoSuchProcess:
            continue
        if not (above & writing):
            jobs.append(proc.pid)
    return sorted(jobs)
