"""The session store: one SQLite file per session, written in batches, readable while written.

* WAL journal: another process (the dashboard, ``effmon report``) reads a live session
  while the recorder writes it; a ``kill -9`` of the recorder loses only rows not yet
  committed (the recorder commits at least twice a second).
* Self-describing: the entities and metric declarations a session was recorded with are
  stored in it, so readers never depend on the code that wrote it.
* Small: one wide row per entity instance per reading (``s_gpu`` holds a GPU's
  every-tick gauges in one row), not one row per value.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effmon.declare import Entity, Metric, Row

SCHEMA_VERSION = 1
APPLICATION_ID = 0x45464D4E  # "EFMN": marks a file as an effmon session
SUFFIX = ".effmon"


class StoreError(Exception):
    pass


class StoreFull(StoreError):
    pass


def _table(entity: str) -> str:
    if not entity.replace("_", "").isalnum():
        raise StoreError(f"bad entity name {entity!r}")
    return f"s_{entity}"


class SessionWriter:
    def __init__(self, path: Path, entities: Iterable[Entity], meta: dict[str, Any], max_bytes: int | None = None):
        self.path = Path(path)
        if self.path.exists():
            raise StoreError(f"session file {self.path} already exists")
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process; fsync at checkpoints
        self.db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self.max_bytes = max_bytes
        self.entities: dict[str, Entity] = {}
        self._inserts: dict[str, tuple[str, tuple[str, ...]]] = {}
        with self._tx():
            self.db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.db.execute("CREATE TABLE entities (name TEXT PRIMARY KEY, keys TEXT, span INTEGER, description TEXT)")
            self.db.execute(
                "CREATE TABLE metrics (entity TEXT, name TEXT, unit TEXT, kind TEXT, description TEXT,"
                " PRIMARY KEY (entity, name))"
            )
            self.db.execute(
                "CREATE TABLE source_status (source TEXT, channel TEXT, state TEXT, info TEXT,"
                " PRIMARY KEY (source, channel))"
            )
            self.db.execute("CREATE TABLE notices (t REAL, level TEXT, text TEXT)")
            for entity in entities:
                self._add_entity(entity)
            self._set_meta(meta)
        if max_bytes:
            page = self.db.execute("PRAGMA page_size").fetchone()[0]
            used = self.db.execute("PRAGMA page_count").fetchone()[0]
            self.db.execute(f"PRAGMA max_page_count={max(used + 1, max_bytes // page)}")

    def _add_entity(self, entity: Entity) -> None:
        if entity.name in self.entities:
            return
        self.entities[entity.name] = entity
        key_types = entity.key_types or ("INTEGER",) * len(entity.keys)
        cols = [f"{c} REAL NOT NULL" for c in entity.time_columns]
        cols += [f"{k} {typ}" for k, typ in zip(entity.keys, key_types)]
        cols += [f"{m.name} {m.sql_type}" for m in entity.metrics]
        self.db.execute(f"CREATE TABLE {_table(entity.name)} ({', '.join(cols)})")
        # readers ask for time ranges (the dashboard every second): index the time they sort on
        self.db.execute(f"CREATE INDEX {_table(entity.name)}_time ON {_table(entity.name)} ({entity.time_columns[-1]})")
        self.db.execute(
            "INSERT INTO entities VALUES (?, ?, ?, ?)",
            (entity.name, json.dumps(entity.keys), int(entity.span), entity.description),
        )
        self.db.executemany(
            "INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
            [(entity.name, m.name, m.unit, m.kind, m.description) for m in entity.metrics],
        )
        columns = entity.columns
        sql = f"INSERT INTO {_table(entity.name)} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        self._inserts[entity.name] = (sql, columns)

    def _tx(self) -> _Transaction:
        return _Transaction(self)

    def _set_meta(self, meta: dict[str, Any]) -> None:
        self.db.executemany(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [(k, json.dumps(v, default=str)) for k, v in meta.items()],
        )

    def set_meta(self, **meta: Any) -> None:
        with self._tx():
            self._set_meta(meta)

    def write(
        self,
        rows: list[Row],
        status: list[dict[str, Any]] | None = None,
        notices: Iterable[tuple[float, str, str]] = (),
    ) -> None:
        """Write one batch in one transaction."""
        grouped: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            sql_cols = self._inserts.get(row.entity)
            if sql_cols is None:
                continue
            grouped.setdefault(row.entity, []).append(tuple(row.values.get(c) for c in sql_cols[1]))
        with self._tx():
            for entity, values in grouped.items():
                self.db.executemany(self._inserts[entity][0], values)
            if status:
                self.db.executemany(
                    "INSERT OR REPLACE INTO source_status VALUES (?, ?, ?, ?)",
                    [(s["source"], s["channel"], s["state"], json.dumps(s)) for s in status],
                )
            if notices:
                self.db.executemany("INSERT INTO notices VALUES (?, ?, ?)", list(notices))

    def close(self) -> None:
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self.db.close()


class _Transaction:
    def __init__(self, writer: SessionWriter):
        self.writer = writer

    def __enter__(self) -> None:
        self.writer.db.execute("BEGIN")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        db = self.writer.db
        if exc_type is None:
            try:
                db.execute("COMMIT")
                return
            except sqlite3.OperationalError as err:
                exc = err
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
            raise StoreFull(str(exc)) from exc
        if exc_type is None and exc is not None:
            raise StoreError(str(exc)) from exc


@dataclass
class SessionSummary:
    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.name.removesuffix(SUFFIX)


class SessionReader:
    """Read a session, live or finished. Never writes to it."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"no session file at {self.path}")
        try:
            # Read-write with query_only: the last connection to close can then clean up the WAL files;
            # a read-only directory falls back to a read-only connection.
            try:
                self.db = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, check_same_thread=False)
                self.db.execute("PRAGMA query_only=ON")
            except sqlite3.OperationalError:
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            app_id = self.db.execute("PRAGMA application_id").fetchone()[0]
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not an effmon session ({exc})") from None
        if app_id != APPLICATION_ID:
            self.db.close()
            raise StoreError(f"{self.path} is not an effmon session (it is some other SQLite file or data)")
        if version > SCHEMA_VERSION:
            self.db.close()
            raise StoreError(
                f"{self.path} was written by a newer effmon (schema {version}, this one reads {SCHEMA_VERSION}); "
                "upgrade effmon: pip install -U effmon"
            )
        self.schema_version = version
        self._entities: dict[str, Entity] | None = None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SessionReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def entities(self) -> dict[str, Entity]:
        """The session's entities and metric declarations; fixed when the session was created, read once."""
        if self._entities is not None:
            return self._entities
        metrics: dict[str, list[Metric]] = {}
        for ent, name, unit, kind, desc in self.db.execute(
            "SELECT entity, name, unit, kind, description FROM metrics ORDER BY rowid"
        ):
            metrics.setdefault(ent, []).append(Metric(name, unit, kind, desc))
        out = {}
        for name, keys, span, desc in self.db.execute("SELECT name, keys, span, description FROM entities"):
            out[name] = Entity(name, tuple(json.loads(keys)), tuple(metrics.get(name, ())), desc, bool(span))
        self._entities = out
        return out

    def has(self, entity: str) -> bool:
        return entity in self.entities()  # every table a writer creates is registered in `entities`

    def count(self, entity: str) -> int:
        if not self.has(entity):
            return 0
        return int(self.db.execute(f"SELECT COUNT(*) FROM {_table(entity)}").fetchone()[0])

    def rows(
        self,
        entity: str,
        columns: Iterable[str] | None = None,
        where: str = "",
        params: tuple[Any, ...] = (),
        order: str | None = None,
    ) -> Iterator[tuple[Any, ...]]:
        """Rows of one entity as tuples, in time order unless ``order`` says otherwise."""
        if not self.has(entity):
            return iter(())
        cols = ", ".join(columns) if columns else "*"
        ent = self.entities().get(entity)
        default_order = ent.time_columns[0] if ent else "rowid"
        where_sql = f"WHERE {where}" if where else ""
        sql = f"SELECT {cols} FROM {_table(entity)} {where_sql} ORDER BY {order or default_order}"
        return iter(self.db.execute(sql, params))

    def dicts(self, entity: str, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if not self.has(entity):
            return []
        cur = self.db.execute(f"SELECT * FROM {_table(entity)} {('WHERE ' + where) if where else ''}", params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    def time_range(self) -> tuple[float | None, float | None]:
        lo: float | None = None
        hi: float | None = None
        for name, ent in self.entities().items():
            if name == "phase":
                continue
            a, b = ent.time_columns[0], ent.time_columns[-1]
            first = self.db.execute(f"SELECT {a} FROM {_table(name)} ORDER BY rowid LIMIT 1").fetchone()
            if first is None:
                continue
            last = self.db.execute(f"SELECT MAX({b}) FROM {_table(name)}").fetchone()  # the index makes this cheap
            lo = first[0] if lo is None else min(lo, first[0])
            hi = last[0] if hi is None else max(hi, last[0])
        return lo, hi

    def source_status(self) -> list[dict[str, Any]]:
        return [json.loads(info) for (info,) in self.db.execute("SELECT info FROM source_status")]

    def notices(self) -> list[tuple[float, str, str]]:
        return list(self.db.execute("SELECT t, level, text FROM notices ORDER BY t"))

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
