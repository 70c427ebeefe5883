"""Damaged session files: what can still be read (``check``) and a copy of it (``salvage``).

A damaged page (a disk error, a file cut short by a full disk, a bad copy) makes SQLite refuse every query
that touches it. Rows are read here in blocks of row ids; a block that fails is split in halves down to
single rows, so all that is readable is read and what is lost is counted per table. Besides ``store``, this
is the one module that speaks SQL to a session file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effmon.core.files import create_private

BLOCK = 4096
DERIVED = ("chunks",)
"""Tables whose content is made from the others (``store.rebuild_chunks``): a loss there is repaired."""


@dataclass
class TableCheck:
    name: str
    rows_read: int = 0
    rows_lost: int = 0
    error: str | None = None


@dataclass
class CheckResult:
    path: Path
    problems: list[str] = field(default_factory=list)
    """What SQLite's own check (``PRAGMA quick_check``) found; empty when the file is sound."""
    tables: list[TableCheck] = field(default_factory=list)
    schema_error: str | None = None

    @property
    def damaged(self) -> bool:
        """Anything unreadable, repairable or not."""
        return bool(self.problems or self.schema_error or any(t.rows_lost or t.error for t in self.tables))

    @property
    def rows_lost(self) -> int:
        """Readings lost (the columnar chunks are not counted: they are packed again from the rows)."""
        return sum(t.rows_lost for t in self.tables if t.name not in DERIVED)


def _open(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _schema(db: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(type, name, sql) of the tables, then the indexes."""
    rows = db.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    return sorted(rows, key=lambda r: r[0] != "table")


def _range(db: sqlite3.Connection, table: str, a: int, b: int) -> tuple[list[tuple[Any, ...]], int]:
    try:
        return db.execute(f'SELECT rowid, * FROM "{table}" WHERE rowid BETWEEN ? AND ?', (a, b)).fetchall(), 0
    except sqlite3.DatabaseError:
        if a == b:
            return [], 1
        mid = (a + b) // 2
        left, lost_left = _range(db, table, a, mid)
        right, lost_right = _range(db, table, mid + 1, b)
        return left + right, lost_left + lost_right


def _highest_rowid(db: sqlite3.Connection, table: str) -> int:
    try:
        row = db.execute(f'SELECT max(rowid) FROM "{table}"').fetchone()
        return int(row[0] or 0)
    except sqlite3.DatabaseError:  # the right edge itself is damaged: bound it by the file's size
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return int(pages * size // 8)


def _rows(db: sqlite3.Connection, table: str, report: TableCheck) -> Iterator[list[tuple[Any, ...]]]:
    high = _highest_rowid(db, table)
    empty_after_last = 0
    for a in range(1, high + 1, BLOCK):
        rows, lost = _range(db, table, a, a + BLOCK - 1)
        report.rows_read += len(rows)
        report.rows_lost += lost
        empty_after_last = 0 if rows or lost else empty_after_last + 1
        if empty_after_last > 64 and a > BLOCK * 64:
            break  # past the last row (the bound was an estimate)
        if rows:
            yield rows


def check(path: Path) -> CheckResult:
    """Read every row of every table (nothing is written) and say what could not be read."""
    return _walk(Path(path), None)


def salvage(path: Path, dst: Path) -> CheckResult:
    """Copy every readable row of a session into a new session file ``dst`` (0600), whose metadata then says
    what was lost (``damaged``); reports of it carry that note. The columnar chunks are packed again from the
    rows where a chunk was lost (the rows and the chunks hold the same readings)."""
    from effmon.core.store import rebuild_chunks

    result = _walk(Path(path), Path(dst))
    if not result.schema_error:
        rebuild_chunks(Path(dst))
    return result


def _walk(path: Path, dst: Path | None) -> CheckResult:
    result = CheckResult(path)
    db = _open(path)
    out: sqlite3.Connection | None = None
    try:
        result.problems = _quick_check(db)
        try:
            schema = _schema(db)
            app_id, version = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("application_id", "user_version"))
        except sqlite3.DatabaseError as exc:
            result.schema_error = f"its table list cannot be read ({exc}): nothing can be recovered"
            return result
        if dst is not None:
            out = _new_copy(dst, schema, int(app_id), int(version))
        for kind, name, _ in schema:
            if kind == "table":
                result.tables.append(_copy_table(db, name, out))
        if out is not None:
            lost = {t.name: t.rows_lost for t in result.tables if t.rows_lost and t.name not in DERIVED}
            if any(t.name == "meta" for t in result.tables):
                out.execute(
                    "INSERT INTO meta VALUES ('damaged', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (json.dumps({"from": str(path), "rows_lost": lost, "problems": result.problems[:5]}),),
                )
            out.execute("COMMIT")
        return result
    finally:
        db.close()
        if out is not None:
            out.close()


def _quick_check(db: sqlite3.Connection) -> list[str]:
    try:
        return [r[0] for r in db.execute("PRAGMA quick_check(20)").fetchall() if r[0] != "ok"]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]


def _new_copy(dst: Path, schema: list[tuple[str, str, str]], app_id: int, version: int) -> sqlite3.Connection:
    os.close(create_private(dst))
    out = sqlite3.connect(dst, isolation_level=None)
    out.execute(f"PRAGMA application_id={app_id}")
    out.execute(f"PRAGMA user_version={version}")
    out.execute("BEGIN")
    for _, _, sql in schema:
        out.execute(sql)
    return out


def _copy_table(db: sqlite3.Connection, name: str, out: sqlite3.Connection | None) -> TableCheck:
    report = TableCheck(name)
    try:
        for rows in _rows(db, name, report):
            if out is not None:
                cols = [c[1] for c in db.execute(f'PRAGMA table_info("{name}")')]
                names = ", ".join(["rowid", *(f'"{c}"' for c in cols)])
                out.executemany(f'INSERT INTO "{name}" ({names}) VALUES ({", ".join("?" * len(rows[0]))})', rows)
    except sqlite3.DatabaseError as exc:
        report.error = str(exc)
    return report
