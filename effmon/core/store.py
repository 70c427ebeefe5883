"""The session store: one SQLite file per session, written in batches, readable while written.

* WAL journal: another process (the dashboard, ``effmon report``) reads a live session while the
  recorder writes it; a ``kill -9`` of the recorder loses only rows not yet committed.
* Self-describing: the entities and metric declarations a session was recorded with are stored in it,
  so readers never depend on the code that wrote it, and ``SELECT * FROM s_gpu`` works in any SQLite tool.
* Two layouts of the same readings, written in one transaction: wide rows (one per entity instance per
  reading, for SQL and the dashboard's "latest" and bucketed queries) and, for the high-rate series
  entities (``gpu``, ``gpu_gpm``, ``host`` ...), a columnar chunk per batch (packed float64 columns).
  Reports read the chunks: arrays, not a Python object per value.
* This module owns the SQL. Everything else reads through ``SessionReader``'s typed queries and writes
  through one ``SessionWriter`` per file (thread-safe).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effmon.core.declare import Entity, Metric, Row
from effmon.core.files import create_private
from effmon.core.meta import SessionMeta
from effmon.core.redact import policy, redact_text, redact_value

if TYPE_CHECKING:
    import numpy as np

SCHEMA_VERSION = 2
"""1: wide rows only. 2: adds the columnar ``chunks`` table (1 is still read, row by row)."""
APPLICATION_ID = 0x45464D4E  # "EFMN": marks a file as an effmon session
SUFFIX = ".effmon"
NAN = math.nan


class StoreError(Exception):
    pass


class StoreFull(StoreError):
    pass


class SessionExists(StoreError):
    pass


class SessionStarting(StoreError):
    """The file exists but its recorder has not written its first transaction yet."""


class StoreDamaged(StoreError):
    """Part of a session file cannot be read (a damaged page); ``salvage`` copies what can."""


REDACTION = 1
"""Stored in a session's metadata (``redaction``) when everything in it went through the redaction policy;
a session without it (recorded by effmon before 0.2) is redacted when read."""


def _table(entity: str) -> str:
    if not entity.replace("_", "").isalnum():
        raise StoreError(f"bad entity name {entity!r}")
    return f"s_{entity}"


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise StoreError(f"bad column name {name!r}")
    return name


def chunk_layout(entity: Entity) -> tuple[str, ...] | None:
    """The columns packed into a chunk, or None when the entity is not a series entity.

    A series entity has one time stamp, at most the ``gpu`` key and numeric columns only: it is read
    as arrays (spans, process rows and text columns are read as rows)."""
    if entity.span or any(k != "gpu" for k in entity.keys):
        return None
    if any(m.sql_type == "TEXT" for m in entity.metrics):
        return None
    return ("t", *entity.keys, *(m.name for m in entity.metrics))


@lru_cache(maxsize=4096)
def _redact_short(text: str) -> str:
    return redact_text(text)


def _redacted(values: tuple[Any, ...], positions: tuple[int, ...]) -> tuple[Any, ...]:
    """A row with its text columns (process names, phase labels, request errors) redacted; the same few
    strings come again every second, so results are cached."""
    out = list(values)
    for i in positions:
        if isinstance(out[i], str):
            out[i] = _redact_short(out[i]) if len(out[i]) < 256 else redact_text(out[i])
    return tuple(out)


def _pack(values: list[tuple[Any, ...]]) -> bytes:
    """Row-major float64 (NaN for NULL), stdlib only: the recorder never imports numpy. Row-major, so the
    chunks of an entity joined end to end are one (rows x columns) array."""
    return array("d", [NAN if v is None else v for row in values for v in row]).tobytes()


class SessionWriter:
    """The one writer of a session file. Every write is one transaction; calls from several threads
    are serialised (the recording's flusher, a load generator's results, a final status)."""

    def __init__(self, path: Path, entities: Iterable[Entity], meta: dict[str, Any], max_bytes: int | None = None):
        self.path = Path(path)
        policy()  # the user's redaction rules are readable (or this raises) before any file exists
        try:  # claimed with O_EXCL: two recorders never share a file, and it is 0600 from the first byte
            os.close(create_private(self.path))
        except FileExistsError:
            raise SessionExists(f"session file {self.path} already exists") from None
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process; fsync at checkpoints
        self.max_bytes = max_bytes
        self.entities: dict[str, Entity] = {}
        self._inserts: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._chunks: dict[str, tuple[int, ...]] = {}  # entity -> positions of its chunk columns in a row tuple
        self._texts: dict[str, tuple[int, ...]] = {}  # entity -> positions of its TEXT columns (redacted)
        with self._tx():  # one transaction: a reader sees no session or a whole one (never half a header)
            self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute("CREATE TABLE entities (name TEXT PRIMARY KEY, keys TEXT, span INTEGER, description TEXT)")
            self._db.execute(
                "CREATE TABLE metrics (entity TEXT, name TEXT, unit TEXT, kind TEXT, description TEXT,"
                " sql_type TEXT, PRIMARY KEY (entity, name))"
            )
            self._db.execute(
                "CREATE TABLE source_status (source TEXT, channel TEXT, state TEXT, info TEXT,"
                " PRIMARY KEY (source, channel))"
            )
            self._db.execute("CREATE TABLE notices (t REAL, level TEXT, text TEXT)")
            self._db.execute(
                "CREATE TABLE chunks (entity TEXT NOT NULL, t_min REAL, t_max REAL, n INTEGER, columns TEXT, data BLOB)"
            )
            # an entity's chunks after a cursor (rowid is the index's last column), and where they start: an
            # entity's chunks come in time order, so the first chunk after a time bounds a read by rowid
            self._db.execute("CREATE INDEX chunks_entity ON chunks (entity)")
            self._db.execute("CREATE INDEX chunks_time ON chunks (entity, t_min)")
            for entity in entities:
                self._add_entity(entity)
            self._set_meta({**meta, "redaction": REDACTION})
        if max_bytes:
            page = self._db.execute("PRAGMA page_size").fetchone()[0]
            used = self._db.execute("PRAGMA page_count").fetchone()[0]
            self._db.execute(f"PRAGMA max_page_count={max(used + 1, max_bytes // page)}")

    def _add_entity(self, entity: Entity) -> None:
        if entity.name in self.entities:
            return
        self.entities[entity.name] = entity
        table = _table(entity.name)
        key_types = entity.key_types or ("INTEGER",) * len(entity.keys)
        cols = [f"{c} REAL NOT NULL" for c in entity.time_columns]
        cols += [f"{_ident(k)} {typ}" for k, typ in zip(entity.keys, key_types, strict=True)]
        cols += [f"{_ident(m.name)} {m.sql_type}" for m in entity.metrics]
        self._db.execute(f"CREATE TABLE {table} ({', '.join(cols)})")
        # readers ask for time ranges (the dashboard every second): index the time they sort on
        self._db.execute(f"CREATE INDEX {table}_time ON {table} ({entity.time_columns[-1]})")
        self._db.execute(
            "INSERT INTO entities VALUES (?, ?, ?, ?)",
            (entity.name, json.dumps(entity.keys), int(entity.span), entity.description),
        )
        self._db.executemany(
            "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
            [(entity.name, m.name, m.unit, m.kind, m.description, m.sql_type) for m in entity.metrics],
        )
        columns = entity.columns
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        self._inserts[entity.name] = (sql, columns)
        texts = tuple(i for i, c in enumerate(columns) if c in {m.name for m in entity.metrics if m.sql_type == "TEXT"})
        if texts:
            self._texts[entity.name] = texts
        layout = chunk_layout(entity)
        if layout is not None:
            self._chunks[entity.name] = tuple(columns.index(c) for c in layout)

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _set_meta(self, meta: dict[str, Any]) -> None:
        self._db.executemany(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [(k, json.dumps(redact_value(v, k), default=str)) for k, v in meta.items()],
        )

    def set_meta(self, **meta: Any) -> None:
        with self._lock, self._tx():
            self._set_meta(meta)

    def write(
        self,
        rows: Sequence[Row],
        status: list[dict[str, Any]] | None = None,
        notices: Iterable[tuple[float, str, str]] = (),
    ) -> None:
        """Write one batch (rows, each series entity's chunk, source states, notices) in one transaction."""
        grouped: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            sql_cols = self._inserts.get(row.entity)
            if sql_cols is None:
                continue
            cells = tuple(row.values.get(c) for c in sql_cols[1])
            texts = self._texts.get(row.entity)
            if texts:
                cells = _redacted(cells, texts)
            grouped.setdefault(row.entity, []).append(cells)
        with self._lock, self._tx():
            for entity, values in grouped.items():
                self._db.executemany(self._inserts[entity][0], values)
                positions = self._chunks.get(entity)
                if positions is not None:
                    self._write_chunk(entity, positions, values)
            if status:
                self._db.executemany(
                    "INSERT OR REPLACE INTO source_status VALUES (?, ?, ?, ?)",
                    [(s["source"], s["channel"], s["state"], json.dumps(redact_value(s))) for s in status],
                )
            notices = [(t, level, redact_text(text)) for t, level, text in notices]
            if notices:
                self._db.executemany("INSERT INTO notices VALUES (?, ?, ?)", notices)

    def _write_chunk(self, entity: str, positions: tuple[int, ...], values: list[tuple[Any, ...]]) -> None:
        picked = [tuple(v[p] for p in positions) for v in values]
        times = [v[0] for v in picked]
        layout = [self._inserts[entity][1][p] for p in positions]
        self._db.execute(
            "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
            (entity, min(times), max(times), len(picked), ",".join(layout), _pack(picked)),
        )

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()


def rebuild_chunks(path: Path, rows_per_chunk: int = 5000) -> list[str]:
    """Make a session's columnar chunks agree with its wide rows again (after ``salvage`` kept rows whose chunk
    was lost, or the reverse): for each series entity whose chunks hold another number of rows than its table,
    the chunks are packed anew from the rows. Returns the entities rebuilt."""
    with SessionReader(path) as reader:
        entities = reader.entities()
    db = sqlite3.connect(path, isolation_level=None)
    rebuilt = []
    try:
        db.execute("BEGIN")
        for entity in entities.values():
            layout = chunk_layout(entity)
            if layout is None:
                continue
            table = _table(entity.name)
            in_rows = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            in_chunks = db.execute(
                "SELECT coalesce(sum(n), 0) FROM chunks WHERE entity = ?", (entity.name,)
            ).fetchone()[0]
            if in_rows == in_chunks:
                continue
            db.execute("DELETE FROM chunks WHERE entity = ?", (entity.name,))
            cur = db.execute(f"SELECT {', '.join(layout)} FROM {table} ORDER BY rowid")
            while batch := cur.fetchmany(rows_per_chunk):
                times = [v[0] for v in batch]
                db.execute(
                    "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                    (entity.name, min(times), max(times), len(batch), ",".join(layout), _pack(batch)),
                )
            rebuilt.append(entity.name)
        db.execute("COMMIT")
    finally:
        db.close()
    return rebuilt


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.OperationalError as err:
                exc = err
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
            raise StoreFull(str(exc)) from exc
        if exc_type is None and exc is not None:
            raise StoreError(str(exc)) from exc


class Series:
    """Typed series of one entity instance: float64 arrays by column in recording (= time) order.

    NULL reads NaN. ``py(column, value)`` gives a value back as the Python type it was stored as
    (an INTEGER column gives ints), so exports print what was recorded."""

    def __init__(self, arrays: dict[str, np.ndarray], integer: frozenset[str]):
        self.arrays = arrays
        self.integer = integer

    def __getitem__(self, column: str) -> np.ndarray:
        return self.arrays[column]

    def __contains__(self, column: str) -> bool:
        return column in self.arrays

    def __len__(self) -> int:
        return len(self.arrays["t"])

    @property
    def t(self) -> np.ndarray:
        return self.arrays["t"]

    def py(self, column: str, value: Any) -> Any:
        if value is None or value != value:
            return None
        return int(value) if column in self.integer and float(value).is_integer() else float(value)

    def values(self, column: str) -> list[Any]:
        """The column as Python values (None for NULL)."""
        return [self.py(column, v) for v in self.arrays[column].tolist()]


@dataclass
class SeriesRead:
    """Arrays of one entity by instance key (the GPU index; 0 for an entity without keys), and where
    the read ended: pass ``cursor`` back to read only what was appended since."""

    by_key: dict[int, Series]
    cursor: int


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
                self._db = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, check_same_thread=False)
                self._db.execute("PRAGMA query_only=ON")
            except sqlite3.OperationalError:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            # one read transaction: a recorder committing its first transaction between two reads here once
            # made a new session look like "some other SQLite file" (its tables there, its id not yet)
            self._db.execute("BEGIN")
            try:
                app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            finally:
                self._db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not an effmon session ({exc})") from None
        if app_id != APPLICATION_ID:
            empty = app_id == 0 and not tables
            self._db.close()
            if empty:  # claimed a moment ago; its recorder is writing its first transaction
                raise SessionStarting(f"session {self.path.stem} is being created; try again in a moment")
            raise StoreError(f"{self.path} is not an effmon session (it is some other SQLite file or data)")
        if version > SCHEMA_VERSION:
            self._db.close()
            raise StoreError(
                f"{self.path} was written by a newer effmon (schema {version}, this one reads {SCHEMA_VERSION}); "
                "upgrade effmon: pip install -U effmon"
            )
        self.schema_version = version
        self._entities: dict[str, Entity] | None = None
        self._lock = threading.Lock()  # one connection, used by the dashboard's worker threads too

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SessionReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """The connection, one thread at a time; a damaged file is a ``StoreDamaged`` that says what to do."""
        with self._lock:
            try:
                yield
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and "malformed" not in str(exc):
                    raise
                raise StoreDamaged(
                    f"session {self.path.stem} is damaged ({exc}); see what can be read with: "
                    f"effmon sessions check {self.path.stem}"
                ) from None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._reading():
            return self._db.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._reading():
            row: tuple[Any, ...] | None = self._db.execute(sql, params).fetchone()
            return row

    # -- what the session is ----------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        meta = {k: json.loads(v) for k, v in self._query("SELECT key, value FROM meta")}
        if "redaction" not in meta:  # recorded before effmon redacted at the store: nothing unredacted comes out
            meta = {k: redact_value(v, k) for k, v in meta.items()}
        return meta

    def session_meta(self) -> SessionMeta:
        """The metadata, typed: the keys effmon knows as fields, a plugin's own in ``extra``."""
        return SessionMeta.from_dict(self.meta())

    def entities(self) -> dict[str, Entity]:
        """The session's entities and metric declarations; fixed when the session was created, read once."""
        if self._entities is not None:
            return self._entities
        has_type = self.schema_version >= 2
        metrics: dict[str, list[Metric]] = {}
        sql = "SELECT entity, name, unit, kind, description" + (", sql_type" if has_type else "")
        for row in self._query(sql + " FROM metrics ORDER BY rowid"):
            ent, name, unit, kind, desc = row[:5]
            sql_type = row[5] if has_type else self._column_type(ent, name)
            metrics.setdefault(ent, []).append(Metric(name, unit, kind, desc, sql_type))  # type: ignore[arg-type]
        out = {}
        for name, keys, span, desc in self._query("SELECT name, keys, span, description FROM entities"):
            out[name] = Entity(name, tuple(json.loads(keys)), tuple(metrics.get(name, ())), desc, bool(span))
        self._entities = out
        return out

    def _column_type(self, entity: str, column: str) -> str:
        """A schema-1 session: the declared type from the table itself."""
        for _, name, typ, *_ in self._query(f"PRAGMA table_info({_table(entity)})"):
            if name == column:
                return str(typ or "REAL").upper()
        return "REAL"

    def has(self, entity: str) -> bool:
        return entity in self.entities()  # every table a writer creates is registered in `entities`

    def count(self, entity: str) -> int:
        if not self.has(entity):
            return 0
        row = self._one(f"SELECT COUNT(*) FROM {_table(entity)}")
        return int(row[0]) if row else 0

    def time_range(self) -> tuple[float | None, float | None]:
        lo: float | None = None
        hi: float | None = None
        for name, ent in self.entities().items():
            if name == "phase":
                continue
            a, b = ent.time_columns[0], ent.time_columns[-1]
            first = self._one(f"SELECT {a} FROM {_table(name)} ORDER BY rowid LIMIT 1")
            if first is None:
                continue
            last = self._one(f"SELECT MAX({b}) FROM {_table(name)}")  # the index makes this cheap
            lo = first[0] if lo is None else min(lo, first[0])
            if last is not None and last[0] is not None:
                hi = last[0] if hi is None else max(hi, last[0])
        return lo, hi

    def source_status(self) -> list[dict[str, Any]]:
        status = [json.loads(info) for (info,) in self._query("SELECT info FROM source_status")]
        return [redact_value(s) for s in status] if self._unredacted() else status

    def notices(self) -> list[tuple[float, str, str]]:
        notices = self._query("SELECT t, level, text FROM notices ORDER BY t")
        clean = redact_text if self._unredacted() else str
        return [(t, level, clean(text)) for t, level, text in notices]

    def _unredacted(self) -> bool:
        """Recorded before effmon redacted at the store (no ``redaction`` in its metadata)."""
        return not self._query("SELECT 1 FROM meta WHERE key = 'redaction'")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    # -- series: arrays --------------------------------------------------------------------
    def series(self, entity: str, columns: Sequence[str], cursor: int = 0, until: float | None = None) -> SeriesRead:
        """A series entity's columns as arrays per instance, from the columnar chunks (rows for a schema-1
        session). ``cursor``: only what was appended after an earlier read. ``until``: stop before the
        first chunk that starts after this time (a replay cursor)."""
        ent = self.entities().get(entity)
        if ent is None:
            return SeriesRead({}, cursor)
        have = {m.name for m in ent.metrics}
        wanted = ["t", *(c for c in columns if c in have and c != "t")]
        integer = frozenset(m.name for m in ent.metrics if m.sql_type == "INTEGER")
        if self.schema_version >= 2 and chunk_layout(ent) is not None:
            return self._series_from_chunks(ent, wanted, integer, cursor, until)
        return self._series_from_rows(ent, wanted, integer, cursor, until)

    def _series_from_chunks(
        self, ent: Entity, wanted: list[str], integer: frozenset[str], cursor: int, until: float | None
    ) -> SeriesRead:
        import numpy as np

        rows = self._chunks(ent.name, cursor, until)
        if not rows:
            return SeriesRead({}, cursor)
        key = "gpu" if "gpu" in ent.keys else None
        blocks: list[np.ndarray] = []
        start = 0
        for i in range(1, len(rows) + 1):  # runs of chunks with one layout (a session has one)
            if i == len(rows) or rows[i][1] != rows[start][1]:
                layout = rows[start][1].split(",")
                joined = b"".join(r[2] for r in rows[start:i])
                block = np.frombuffer(joined, dtype="<f8").reshape(-1, len(layout))
                blocks.append(block[:, [layout.index(c) for c in [*wanted, *([key] if key else [])]]])
                start = i
        return SeriesRead(self._split(blocks, wanted, key, integer), rows[-1][0])

    def _chunks(self, entity: str, after: int, until: float | None = None, start: float | None = None) -> list[Any]:
        """(rowid, layout, data) of an entity's chunks after rowid ``after``, none starting after ``until``, none
        ending before ``start``. An entity's chunks come in time order, so both bounds are index seeks."""
        lo, hi = after, None
        if until is not None:
            nxt = self._one(
                "SELECT rowid FROM chunks WHERE entity = ? AND t_min > ? ORDER BY t_min LIMIT 1", (entity, until)
            )
            hi = nxt[0] if nxt else None
        if start is not None:
            first = self._one(
                "SELECT rowid FROM chunks WHERE entity = ? AND t_min <= ? ORDER BY t_min DESC LIMIT 1", (entity, start)
            )
            lo = max(lo, first[0] - 1) if first else lo
        sql = "SELECT rowid, columns, data FROM chunks WHERE entity = ? AND rowid > ?"
        params: list[Any] = [entity, lo]
        if hi is not None:
            sql += " AND rowid < ?"
            params.append(hi)
        return self._query(sql + " ORDER BY rowid", params)

    def _series_from_rows(
        self, ent: Entity, wanted: list[str], integer: frozenset[str], cursor: int, until: float | None
    ) -> SeriesRead:
        import numpy as np

        key = "gpu" if "gpu" in ent.keys else None
        cols = [*wanted, *([key] if key else [])]
        sql = f"SELECT rowid, {', '.join(map(_ident, cols))} FROM {_table(ent.name)} WHERE rowid > ?"
        params: list[Any] = [cursor]
        if until is not None:
            sql += " AND t <= ?"
            params.append(until)
        rows = self._query(sql + " ORDER BY rowid", params)
        if not rows:
            return SeriesRead({}, cursor)
        cursor = rows[-1][0]
        block = np.array([[NAN if v is None else v for v in r[1:]] for r in rows], dtype="<f8")
        return SeriesRead(self._split([block], wanted, key, integer), cursor)

    @staticmethod
    def _split(
        blocks: list[np.ndarray], wanted: list[str], key: str | None, integer: frozenset[str]
    ) -> dict[int, Series]:
        """(rows x columns) blocks in recording order -> contiguous arrays per instance, order kept."""
        import numpy as np

        block = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        if key is None:
            return {0: Series({c: np.ascontiguousarray(block[:, i]) for i, c in enumerate(wanted)}, integer)}
        keys = block[:, len(wanted)]
        order = np.argsort(keys, kind="stable")
        block, keys = block[order], keys[order]
        bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
        out: dict[int, Series] = {}
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if keys[a] == keys[a]:  # rows without a key (NaN) belong to no instance
                part = block[a:b]
                out[int(keys[a])] = Series({c: np.ascontiguousarray(part[:, i]) for i, c in enumerate(wanted)}, integer)
        return out

    # -- spans and rows --------------------------------------------------------------------
    def spans(
        self, entity: str, *, end_after: float | None = None, end_before: float | None = None, cursor: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """Rows as dicts in recording order (``end_*`` filter span entities by their end), with a cursor for
        the next read."""
        if not self.has(entity):
            return [], cursor
        sql = f"SELECT rowid, * FROM {_table(entity)} WHERE rowid > ?"
        params: list[Any] = [cursor]
        if end_after is not None:
            sql += " AND t_end >= ?"
            params.append(end_after)
        if end_before is not None:
            sql += " AND t_end <= ?"
            params.append(end_before)
        with self._reading():
            cur = self._db.execute(sql + " ORDER BY rowid", params)
            names = [d[0] for d in cur.description][1:]
            rows = cur.fetchall()
        if not rows:
            return [], cursor
        return [dict(zip(names, r[1:], strict=True)) for r in rows], rows[-1][0]

    def has_rows(self, entity: str) -> bool:
        """Whether the entity has any row (a chunked series: any chunk)."""
        if not self.has(entity):
            return False
        if self._one(f"SELECT 1 FROM {_table(entity)} LIMIT 1") is not None:
            return True
        if self.schema_version < 2:
            return False
        return self._one("SELECT 1 FROM chunks WHERE entity = ? LIMIT 1", (entity,)) is not None

    def last_spans(self, entity: str, n: int, before: float | None = None) -> list[dict[str, Any]]:
        """The last ``n`` rows of a span entity that ended at or before ``before``, oldest first."""
        if not self.has(entity):
            return []
        sql, params = f"SELECT * FROM {_table(entity)}", []
        if before is not None:
            sql += " WHERE t_end <= ?"
            params.append(before)
        with self._reading():
            cur = self._db.execute(sql + " ORDER BY rowid DESC LIMIT ?", (*params, n))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in reversed(cur.fetchall())]

    def batches(self, entity: str, size: int = 5000) -> Iterator[list[dict[str, Any]]]:
        """Every row of an entity as dicts, ``size`` at a time, in recording order (copies, merges)."""
        cursor = 0
        while True:
            if not self.has(entity):
                return
            with self._reading():
                cur = self._db.execute(
                    f"SELECT rowid, * FROM {_table(entity)} WHERE rowid > ? ORDER BY rowid LIMIT ?", (cursor, size)
                )
                names = [d[0] for d in cur.description][1:]
                rows = cur.fetchall()
            if not rows:
                return
            cursor = rows[-1][0]
            yield [dict(zip(names, r[1:], strict=True)) for r in rows]

    def rows(self, entity: str) -> list[dict[str, Any]]:
        """Every row of an entity as a dict, in recording order (for small entities and tests)."""
        return self.spans(entity)[0]

    def phases(self) -> list[dict[str, Any]]:
        return self.spans("phase")[0]

    def latest(
        self, entity: str, at: float, key: str = "gpu", lookbacks: Sequence[float] = (2.0, 30.0)
    ) -> dict[Any, dict[str, Any]]:
        """The newest row per instance (``key``) at or before ``at``; a short look-back first (the common case)."""
        if not self.has(entity):
            return {}
        for lookback in lookbacks:
            rows = self.rows_between(entity, at - lookback, at, inclusive_start=False)
            if rows:
                return {r[key]: r for r in rows}
        return {}

    def rows_between(
        self, entity: str, start: float, end: float, *, inclusive_start: bool = True
    ) -> list[dict[str, Any]]:
        """Rows of an entity with one time stamp, ``start <= t <= end``, in time order."""
        if not self.has(entity):
            return []
        op = ">=" if inclusive_start else ">"
        with self._reading():
            cur = self._db.execute(f"SELECT * FROM {_table(entity)} WHERE t <= ? AND t {op} ? ORDER BY t", (end, start))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def last_time(self, entity: str, at: float) -> float | None:
        """The newest time stamp of an entity at or before ``at``."""
        if not self.has(entity):
            return None
        row = self._one(f"SELECT MAX(t) FROM {_table(entity)} WHERE t <= ?", (at,))
        return None if row is None else row[0]

    def rows_at(self, entity: str, t: float) -> list[dict[str, Any]]:
        return self.rows_between(entity, t, t)

    def envelope(
        self, entity: str, columns: Sequence[str], start: float, end: float, buckets: int, key: int | None = None
    ) -> dict[int, list[tuple[Any, ...]]]:
        """Per instance, at most ``buckets`` points over [start, end]: each bucket's maximum (None where a
        bucket has no reading), in time order. From the columnar chunks (the dashboard's sparklines)."""
        import numpy as np

        if not self.has(entity) or end <= start:
            return {}
        width = (end - start) / max(1, buckets)
        ent = self.entities()[entity]
        if self.schema_version < 2 or chunk_layout(ent) is None:
            return self._envelope_sql(entity, columns, start, end, width, key)
        rows = self._chunks(entity, 0, until=end, start=start)
        out: dict[int, list[tuple[Any, ...]]] = {}
        if not rows:
            return out
        layout = rows[0][1].split(",")
        joined = b"".join(r[2] for r in rows if r[1] == rows[0][1])
        block = np.frombuffer(joined, dtype="<f8").reshape(-1, len(layout))
        t = block[:, layout.index("t")]
        keys = block[:, layout.index("gpu")] if "gpu" in layout else np.zeros(len(t))
        inside = (t >= start) & (t <= end) & (True if key is None else keys == key)
        for k in np.unique(keys[inside]).tolist():
            mine = inside & (keys == k)
            slot = ((t[mine] - start) / width).astype(np.int64)
            first = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])  # time order: slots only grow
            maxima = [np.fmax.reduceat(block[mine, layout.index(c)], first) for c in columns]
            out[int(k)] = [
                tuple(None if v != v else v for v in values)
                for values in zip(*[m.tolist() for m in maxima], strict=True)
            ]
        return out

    def _envelope_sql(
        self, entity: str, columns: Sequence[str], start: float, end: float, width: float, key: int | None
    ) -> dict[int, list[tuple[Any, ...]]]:
        cols = ", ".join(f"MAX({_ident(c)})" for c in columns)
        where = "t >= ? AND t <= ?" + (" AND gpu = ?" if key is not None else "")
        params: list[Any] = [start, end] + ([key] if key is not None else [])
        out: dict[int, list[tuple[Any, ...]]] = {}
        for row in self._query(
            f"SELECT gpu, {cols} FROM {_table(entity)} WHERE {where} "
            f"GROUP BY gpu, CAST((t - ?) / ? AS INTEGER) ORDER BY gpu, MIN(t)",
            [*params, start, width],
        ):
            out.setdefault(int(row[0]), []).append(row[1:])
        return out
