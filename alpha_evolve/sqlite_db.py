"""What every SQLite file of alpha-evolve shares: connections per thread, WAL, schema versions, transactions.

The program store and the experiment registry are read and written at once by several threads and processes
(a run, the CLI, the dashboard). sqlite3 connections must not cross threads mid-transaction and must not be
inherited across ``fork``, so each thread of each process gets its own; every write is one ``BEGIN IMMEDIATE``
transaction (the write lock is taken up front, so two writers never deadlock on a lock upgrade); a file from a
newer alpha-evolve, a corrupt file or somebody else's database is refused at open with one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Literal, Self

from alpha_evolve.faults import infrastructure_problem, mark_infrastructure
from alpha_evolve.values import one_line

logger = logging.getLogger("alpha_evolve.sqlite_db")


class SQLiteFile:
    """Base class; subclasses set ``KIND`` (the word in messages), ``ERROR``, ``SCHEMA_VERSION``, ``SCHEMA``
    and ``TABLES`` (the tables a file of theirs may contain). ``MIGRATIONS[v]`` holds the statements that bring a
    file of version ``v`` to ``v + 1``; a new file gets ``SCHEMA`` at once."""

    KIND: ClassVar[str] = "database"
    ERROR: ClassVar[type[Exception]] = RuntimeError
    SCHEMA_VERSION: ClassVar[int] = 1
    SCHEMA: ClassVar[Sequence[str]] = ()
    TABLES: ClassVar[frozenset[str]] = frozenset()
    MIGRATIONS: ClassVar[Mapping[int, Sequence[str]]] = {}

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout_s: float = 30.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        check: bool = False,
    ) -> None:
        self.path = Path(db_path)
        self._busy_ms = int(busy_timeout_s * 1000)
        self._synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        if self.path.is_dir():
            raise self.ERROR(f"{self.KIND} {self.path} is a directory, expected a SQLite file")
        if not self.path.exists():
            if not create:
                raise self.ERROR(f"{self.KIND} {self.path} does not exist")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                error = self.ERROR(f"{self.KIND} {self.path}: cannot create its folder ({exc.strerror or exc})")
                if infrastructure_problem(exc) is not None:
                    mark_infrastructure(error)
                raise error from None
        try:
            self._open(check)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_ms / 1000, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection; a forked child opens its own instead of reusing the parent's."""
        if self._closed:
            raise self.ERROR(f"{self.KIND} {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = self._connect()
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _open(self, check: bool) -> None:
        """Refuse corrupt, foreign or newer files; create the schema of a new file under the write lock."""
        try:
            conn = self._conn()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if check:
                result = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
                if result != ["ok"]:
                    raise self.ERROR(f"{self.KIND} {self.path} is corrupt: {result[0]}")
        except sqlite3.DatabaseError as exc:
            if infrastructure_problem(exc) is not None:
                raise self._fault(exc, "cannot be opened") from None
            problem = "is corrupt" if check else "cannot be opened"
            raise self.ERROR(f"{self.KIND} {self.path} {problem}: {one_line(str(exc))}") from None
        if version > self.SCHEMA_VERSION:
            raise self.ERROR(
                f"{self.KIND} {self.path} has schema version {version}; this alpha-evolve understands up to "
                f"{self.SCHEMA_VERSION}"
            )
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("%s %s: journal_mode is %s, not wal (filesystem without shared memory?)",
                               self.KIND, self.path, mode)
            if version < self.SCHEMA_VERSION:
                self._create_schema(conn)
            else:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                missing = self.TABLES - tables
                if missing:
                    raise self.ERROR(f"{self.KIND} {self.path} is damaged: tables {', '.join(sorted(missing))} "
                                     "are missing")
        except sqlite3.DatabaseError as exc:
            raise self._fault(exc, "cannot be opened") from None

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have created the schema meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if 0 < version < self.SCHEMA_VERSION:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                missing = self.TABLES - tables
                if missing:
                    raise self.ERROR(f"{self.KIND} {self.path} is damaged: tables {', '.join(sorted(missing))} "
                                     "are missing")
                for step in range(version, self.SCHEMA_VERSION):
                    if step not in self.MIGRATIONS:
                        raise self.ERROR(f"{self.KIND} {self.path} has schema version {version}, which this "
                                         f"alpha-evolve cannot upgrade to {self.SCHEMA_VERSION}")
                    for stmt in self.MIGRATIONS[step]:
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
                logger.info("%s %s upgraded from schema version %d to %d", self.KIND, self.path, version,
                            self.SCHEMA_VERSION)
            elif version == 0:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                foreign = tables - self.TABLES
                if foreign:
                    raise self.ERROR(
                        f"{self.KIND} {self.path} is not an alpha-evolve {self.KIND} "
                        f"(has tables {', '.join(sorted(foreign))})"
                    )
                for stmt in self.SCHEMA:
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
        except BaseException:
            self._rollback(conn)
            raise
        conn.execute("COMMIT")

    # ----------------------------------------------------------------------------------------- transactions

    def _on_write(self, conn: sqlite3.Connection) -> None:
        """Hook run inside every write transaction just before it commits (e.g. bump a revision counter)."""

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """Undo an open transaction. SQLite rolls back by itself after SQLITE_FULL or an I/O error, and an
        unconditional ROLLBACK would then replace the real error with "cannot rollback - no transaction is
        active"; a failing rollback must not hide the real error either."""
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _fault(self, exc: BaseException, what: str) -> Exception:
        """A one-line error for a failed write, tagged as the machine's fault when it is (full, read-only, I/O)."""
        error = self.ERROR(f"{self.KIND} {self.path} {what}: {one_line(str(exc))}")
        if infrastructure_problem(exc) is not None:
            mark_infrastructure(error)
        return error

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken up front, so no deadlock on upgrade."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._fault(exc, "cannot start a write") from None
        try:
            yield conn
            self._on_write(conn)
        except sqlite3.Error as exc:
            self._rollback(conn)
            if infrastructure_problem(exc) is not None:
                raise self._fault(exc, "cannot be written") from None
            raise
        except BaseException:
            self._rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback(conn)
            raise self._fault(exc, "commit failed") from None

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several queries see one consistent state even while another process writes."""
        conn = self._conn()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):  # closing must not mask the real error
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
