"""This machine and the watched process trees, through psutil."""

from __future__ import annotations

from typing import Any

import psutil

from effmon.core.declare import Row
from effmon.core.source import SourceInfo, SourceOptions


class HostSource:
    name = "host"

    def __init__(self, options: SourceOptions):
        self.options = options
        self.channels = {"system": options.host_s, "watched": options.host_s}
        self.busiest = options.busiest
        """``effmon top`` asks for the N busiest processes (no process is watched there)."""
        if self.busiest:
            self.channels["busiest"] = options.host_s
        self._procs: dict[int, psutil.Process] = {}

    def open(self) -> SourceInfo:
        psutil.cpu_percent(None)  # prime: the first call has no interval to measure
        vm = psutil.virtual_memory()
        return SourceInfo(meta={"host": {"cpus": psutil.cpu_count(), "mem_total_bytes": vm.total}})

    def read(self, channel: str, now: float) -> list[Row]:
        if channel == "system":
            vm = psutil.virtual_memory()
            return [
                Row(
                    "host",
                    {
                        "t": now,
                        "cpu_pct": psutil.cpu_percent(None),
                        "mem_used_bytes": vm.total - vm.available,
                        "mem_total_bytes": vm.total,
                    },
                )
            ]
        if channel == "busiest":
            return self._busiest(now)
        return [row for pid in self.options.watched_pids() if (row := self._tree(pid, now)) is not None]

    def _busiest(self, now: float) -> list[Row]:
        """The N processes that used the most CPU since the last read (psutil keeps each process between calls)."""
        seen = []
        for proc in psutil.process_iter(["name", "memory_info"]):
            try:
                seen.append((proc.cpu_percent(None), proc))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        seen.sort(key=lambda cp: -cp[0])
        rows = []
        for cpu, proc in seen[: self.busiest]:
            info = proc.info
            rss = info["memory_info"].rss if info.get("memory_info") else None
            rows.append(
                Row("busiest", {"t": now, "pid": proc.pid, "cpu_pct": cpu, "rss_bytes": rss, "name": info.get("name")})
            )
        return rows

    def _process(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None or not proc.is_running():
            proc = psutil.Process(pid)
            proc.cpu_percent(None)
            self._procs[pid] = proc
        return proc

    def _tree(self, root_pid: int, now: float) -> Row | None:
        try:
            root = self._process(root_pid)
            members = [root] + root.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        totals: dict[str, Any] = {
            "t": now,
            "pid": root_pid,
            "cpu_pct": 0.0,
            "rss_bytes": 0,
            "threads": 0,
            "nprocs": 0,
            "io_read_bytes": None,
            "io_write_bytes": None,
        }
        for member in members:
            try:
                proc = self._process(member.pid)
                with proc.oneshot():
                    totals["cpu_pct"] += proc.cpu_percent(None)
                    totals["rss_bytes"] += proc.memory_info().rss
                    totals["threads"] += proc.num_threads()
                    totals["nprocs"] += 1
                    try:
                        io = proc.io_counters()
                        totals["io_read_bytes"] = (totals["io_read_bytes"] or 0) + io.read_bytes
                        totals["io_write_bytes"] = (totals["io_write_bytes"] or 0) + io.write_bytes
                    except (psutil.AccessDenied, AttributeError):
                        pass
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        keep = {m.pid for m in members} | set(self.options.watched_pids())
        for pid in [p for p in self._procs if p not in keep]:
            del self._procs[pid]
        return Row("watched", totals)

    def close(self) -> None:
        self._procs.clear()
