"""A multi-node job recorded by one ``effmon run`` per node, taken as one run.

Each node's session knows the job from its ranks' ``effmon.track`` start lines (torchrun's run id, the job's
world size, its node ranks). ``job_sessions`` finds the sessions of a job (given ones, or siblings in the same
folder); ``merge`` writes them into one session: every GPU of every node (renumbered ``node × 100 + index``,
each named with its node and host), every rank's steps (steps of one number are one optimizer step, however
many nodes took it), the ranks and their hosts. Reports, ``compare`` and ``effmon replay`` then read one file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from effmon.core.declare import Row

GPU_STRIDE = 100
"""A GPU of node n is GPU n × 100 + its index in the merged session."""


class JobError(Exception):
    pass


def job_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The job a session belongs to, when it belongs to one that spans several nodes."""
    job = meta.get("job")
    if not isinstance(job, dict) or not job.get("run_id") or job.get("run_id") == "none":
        return None
    ranks = meta.get("ranks") or []
    if (job.get("world_size") or 1) <= len(ranks) and not meta.get("merged_from"):
        return None  # every rank is here: one node, or already merged
    return job


def _meta(path: Path) -> dict[str, Any]:
    from effmon.core.store import SessionReader

    with SessionReader(path) as reader:
        return reader.meta()


def job_sessions(paths: list[Path]) -> list[Path] | None:
    """The sessions of the job ``paths`` belong to: the given ones if they are of one job, plus the sessions
    of the same job beside them; None when they are not parts of a multi-node job."""
    metas = {p: _meta(p) for p in paths}
    jobs = {p: job_of(m) for p, m in metas.items()}
    if not all(jobs.values()):
        if len(paths) > 1 and any(jobs.values()):
            raise JobError("these sessions are not all parts of one multi-node job: report them one by one")
        return None
    ids = {j["run_id"] for j in jobs.values() if j}
    if len(ids) > 1:
        raise JobError(f"these sessions belong to different jobs ({', '.join(sorted(ids))}): report them one by one")
    run_id = ids.pop()
    found = {p.resolve() for p in paths}
    for folder in {p.resolve().parent for p in paths}:
        for other in sorted(folder.glob("*.effmon")):
            if other.resolve() in found:
                continue
            try:
                job = job_of(_meta(other))
            except Exception:
                continue  # a damaged or foreign file beside them is not part of the job
            if job and job["run_id"] == run_id:
                found.add(other.resolve())
    return sorted(found)


def merge(paths: list[Path], dst: Path) -> Path:
    """Write the sessions of one job into ``dst`` (a new 0600 file)."""
    from effmon.core.store import SessionReader, SessionWriter

    readers = [SessionReader(p) for p in paths]
    try:
        metas = [r.meta() for r in readers]
        nodes = [_node(m) for m in metas]
        if len(set(nodes)) != len(nodes):
            raise JobError(f"two sessions are of the same node ({nodes}): give one session per node")
        order = sorted(range(len(paths)), key=lambda i: nodes[i])
        entities: dict[str, Any] = {}
        for r in readers:
            entities.update(r.entities())
        meta = _merged_meta(paths, metas, nodes, order)
        writer = SessionWriter(dst, entities.values(), meta)
        try:
            for i in order:
                for name, entity in readers[i].entities().items():
                    _copy(readers[i], writer, name, entity, nodes[i])
                writer.write(
                    [], notices=[(t, level, f"node {nodes[i]}: {text}") for t, level, text in readers[i].notices()]
                )
        finally:
            writer.close()
        return dst
    finally:
        for r in readers:
            r.close()


def _merged_gpus(metas: list[dict[str, Any]], nodes: list[int], order: list[int]) -> list[dict[str, Any]]:
    """Every node's GPUs, numbered apart (node * GPU_STRIDE + index), each with its node and host."""
    gpus = []
    for i in order:
        host = next((x.get("host") for x in metas[i].get("ranks") or [] if x.get("host")), None)
        for g in metas[i].get("gpus") or []:
            gpus.append(
                {**g, "index": nodes[i] * GPU_STRIDE + int(g.get("index") or 0), "node": nodes[i], "host": host}
            )
    return gpus


def _merged_meta(paths: list[Path], metas: list[dict[str, Any]], nodes: list[int], order: list[int]) -> dict[str, Any]:
    first = metas[order[0]]
    job = dict(first["job"])
    status = {m.get("status") for m in metas}
    return {
        **{k: v for k, v in first.items() if k not in ("name", "gpus", "ranks")},
        "name": f"job-{job['run_id']}",
        "gpus": _merged_gpus(metas, nodes, order),
        "ranks": sorted((x for m in metas for x in m.get("ranks") or []), key=lambda x: x.get("rank") or 0),
        "job": {**job, "node_ranks": sorted(nodes), "nodes": len(nodes)},
        "merged_from": [metas[i].get("name") or str(paths[i]) for i in order],
        "started_at": min(m.get("started_at") or 0 for m in metas),
        "ended_at": max(m.get("ended_at") or 0 for m in metas) or None,
        "model": next((m["model"] for m in metas if m.get("model")), None),
        "status": "complete" if status == {"complete"} else ", ".join(sorted(str(s) for s in status)),
    }


def _node(meta: dict[str, Any]) -> int:
    ranks = meta.get("ranks") or []
    found = {int(r.get("node_rank") or 0) for r in ranks}
    if len(found) != 1:
        raise JobError(f"session {meta.get('name')} holds ranks of {len(found)} nodes; expected one node's")
    return found.pop()


def _copy(reader: Any, writer: Any, name: str, entity: Any, node: int) -> None:
    for batch in reader.batches(name):
        out = []
        for values in batch:
            if "gpu" in entity.keys and values.get("gpu") is not None:
                values["gpu"] = node * GPU_STRIDE + int(values["gpu"])
            out.append(Row(name, values))
        writer.write(out)


def merged_path(paths: list[Path]) -> Path:
    """Where the merged session of these parts lives: the effmon home's ``jobs`` folder (private), named after the
    parts, so a second report reuses it unless a part changed since."""
    import hashlib

    from effmon.core.files import private_dir
    from effmon.core.paths import effmon_home

    key = json.dumps([[str(p), p.stat().st_mtime_ns, p.stat().st_size] for p in paths])
    folder = effmon_home() / "jobs"
    private_dir(folder)
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.effmon"


def as_one(paths: list[Path]) -> tuple[list[Path], str | None]:
    """The sessions to read for ``paths``: one merged session when they are the parts of a multi-node job (with a
    line saying so), else ``paths`` as given."""
    parts = job_sessions(paths)
    if parts is None:
        return paths, None
    dst = merged_path(parts)
    if not dst.exists():
        merge(parts, dst)
    meta = _meta(dst)
    job = meta["job"]
    line = f"job {job['run_id']}: {len(parts)} node sessions taken as one run ({', '.join(meta['merged_from'])})"
    world, ranks = job.get("world_size") or 0, len(meta.get("ranks") or [])
    if ranks < world:
        line += f"; only {ranks} of its {world} ranks were found: report the other nodes' sessions with them"
    return [dst], line
