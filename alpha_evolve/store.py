"""SQLite program store: experiments and every program ever tried, crash-safe and shareable.

Why SQLite in WAL mode: a run writes while the dashboard (another process) reads the same file; WAL lets
readers proceed during a write, and each write is one transaction, so a killed run leaves either the whole
iteration or none of it. Pruned programs are only *marked* inactive: they are the record of what was tried.

Connections are per thread (and per process, so a forked child never reuses its parent's handle); sqlite3
connections must not be shared across threads mid-transaction.

Duplicates (``program_keys``): every evaluated program carries a ``code_key`` and, when it produced figures, a
``behavior_key``. A program whose code or behaviour repeats an earlier one of its experiment is stored with
``duplicate_of`` (the first program that did so) and ``duplicate_kind`` ("code": its result was reused, no
backtest; "behavior": it was backtested and traded exactly alike) and is born ``pruned``: it is the record of
what was tried, never a parent, never in the novelty reference, never a top program, never a separate trial.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from alpha_evolve.metric_names import LOWER_IS_BETTER_METRICS
from alpha_evolve.sqlite_db import SQLiteFile
from alpha_evolve.values import finite_or_none

log = logging.getLogger("alpha_evolve.store")

SCHEMA_VERSION = 2

FAILURE_KINDS: frozenset[str] = frozenset(
    {"syntax", "policy", "import", "runtime", "timeout", "memory", "crash", "data", "incomplete", "tampered",
     "lookahead"}
)
PROGRAM_STATUSES: frozenset[str] = frozenset({"ok", "screened"}) | FAILURE_KINDS
STAGES: frozenset[str] = frozenset({"static", "screen", "full"})
EXPERIMENT_STATUSES: frozenset[str] = frozenset({"running", "paused", "completed", "failed"})
DUPLICATE_KINDS: frozenset[str] = frozenset({"code", "behavior"})
# What ``experiment_counters`` returns, in its SELECT's column order.
EXPERIMENT_COUNTERS: tuple[str, ...] = (
    "total_programs",
    "total_mutations",
    "successful_mutations",
    "total_evaluations",
    "successful_evaluations",
    "population_size",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cache_hits",
    "behavior_duplicates",
)
# Failures that say more about the worker than about the program: never reused from the code-key cache.
TRANSIENT_FAILURES: frozenset[str] = frozenset({"crash", "timeout", "memory"})

# Contract metric name -> indexed column. The JSON keeps everything; columns exist so that ordering and
# filtering happen in SQL on an index.
METRIC_COLUMNS: dict[str, str] = {
    "Sharpe": "sharpe",
    "Sortino": "sortino",
    "Calmar": "calmar",
    "MaxDD": "max_dd",
    "CAGR": "cagr",
    "TotalReturn": "total_return",
    "AnnVol": "ann_vol",
    "WinRate": "win_rate",
    "Trades": "trades",
    "Exposure": "exposure",
}
# Columns of the metrics where smaller is better; top_k orders them ascending.
LOWER_IS_BETTER_COLUMNS: frozenset[str] = frozenset(METRIC_COLUMNS[m] for m in LOWER_IS_BETTER_METRICS)
_ORDERABLE: frozenset[str] = frozenset({"fitness", *METRIC_COLUMNS.values()})

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ELIGIBLE = "status = 'ok' AND pruned = 0"
# Pinned indexes for eligible-parent queries: the planner otherwise prefers ix_programs_status and then reads
# every table row (~40 ms at 10,000 programs instead of microseconds).
_BY_FITNESS = "programs INDEXED BY ix_programs_eligible_fitness"
_BY_ID = "programs INDEXED BY ix_programs_eligible_id"

_TRIALS_TABLE = """CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    experiment TEXT NOT NULL,
    program_id INTEGER,
    program_hash TEXT NOT NULL,
    code_key TEXT NOT NULL,
    period TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'candidate',
    status TEXT NOT NULL,
    sharpe REAL,
    sharpe_per_period REAL,
    n_obs INTEGER NOT NULL DEFAULT 0,
    trades REAL,
    behavior_key TEXT,
    via TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
)"""
_TRIALS_INDEX = "CREATE INDEX IF NOT EXISTS ix_trials_period ON trials(experiment, period)"

_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS experiments (
        name TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        config_toml TEXT NOT NULL DEFAULT '',
        target_iterations INTEGER NOT NULL DEFAULT 0,
        completed_iterations INTEGER NOT NULL DEFAULT 0,
        random_seed INTEGER,
        data_hash TEXT,
        nautilus_version TEXT,
        toolkit_version TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        stop_reason TEXT,
        eligible_count INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS programs (
        id INTEGER PRIMARY KEY,
        experiment TEXT NOT NULL REFERENCES experiments(name),
        parent_id INTEGER REFERENCES programs(id),
        generation INTEGER NOT NULL DEFAULT 0,
        iteration INTEGER,
        code TEXT NOT NULL,
        blocks TEXT NOT NULL DEFAULT '{}',
        metrics TEXT NOT NULL DEFAULT '{}',
        behavior TEXT,
        fitness REAL,
        sharpe REAL, sortino REAL, calmar REAL, max_dd REAL, cagr REAL, total_return REAL,
        ann_vol REAL, win_rate REAL, trades REAL, exposure REAL,
        status TEXT NOT NULL,
        failure_kind TEXT,
        failure_message TEXT,
        stage TEXT,
        mutator TEXT,
        model TEXT,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        elapsed_s REAL,
        created_at TEXT NOT NULL,
        is_seed INTEGER NOT NULL DEFAULT 0,
        archived INTEGER NOT NULL DEFAULT 0,
        pruned INTEGER NOT NULL DEFAULT 0,
        code_key TEXT,
        behavior_key TEXT,
        duplicate_of INTEGER REFERENCES programs(id),
        duplicate_kind TEXT
    )""",
    # An iteration is recorded once, ever: the backbone of exact resume.
    """CREATE UNIQUE INDEX IF NOT EXISTS ux_programs_iteration ON programs(experiment, iteration)
        WHERE is_seed = 0""",
    # Parent eligibility: ranked access (elite/exploit) and id-range access (explore).
    f"""CREATE INDEX IF NOT EXISTS ix_programs_eligible_fitness ON programs(experiment, fitness DESC, id)
        WHERE {_ELIGIBLE}""",
    f"CREATE INDEX IF NOT EXISTS ix_programs_eligible_id ON programs(experiment, id) WHERE {_ELIGIBLE}",
    "CREATE INDEX IF NOT EXISTS ix_programs_parent ON programs(parent_id)",
    # eligible_count is kept by triggers, in the writing transaction, so selection never COUNTs a big index.
    """CREATE TRIGGER IF NOT EXISTS tr_programs_eligible_ins AFTER INSERT ON programs
        WHEN NEW.status = 'ok' AND NEW.pruned = 0
        BEGIN UPDATE experiments SET eligible_count = eligible_count + 1 WHERE name = NEW.experiment; END""",
    """CREATE TRIGGER IF NOT EXISTS tr_programs_eligible_upd AFTER UPDATE OF status, pruned, experiment ON programs
        WHEN (OLD.status = 'ok' AND OLD.pruned = 0) != (NEW.status = 'ok' AND NEW.pruned = 0)
          OR OLD.experiment != NEW.experiment
        BEGIN
          UPDATE experiments SET eligible_count = eligible_count - (OLD.status = 'ok' AND OLD.pruned = 0)
            WHERE name = OLD.experiment;
          UPDATE experiments SET eligible_count = eligible_count + (NEW.status = 'ok' AND NEW.pruned = 0)
            WHERE name = NEW.experiment;
        END""",
    """CREATE TRIGGER IF NOT EXISTS tr_programs_eligible_del AFTER DELETE ON programs
        WHEN OLD.status = 'ok' AND OLD.pruned = 0
        BEGIN UPDATE experiments SET eligible_count = eligible_count - 1 WHERE name = OLD.experiment; END""",
    "CREATE INDEX IF NOT EXISTS ix_programs_status ON programs(experiment, status, pruned)",
    *(f"CREATE INDEX IF NOT EXISTS ix_programs_{col} ON programs(experiment, {col}, id)"
      for col in ("code_key", "behavior_key")),
    *(
        f"CREATE INDEX IF NOT EXISTS ix_programs_{col} ON programs(experiment, {col}) WHERE status = 'ok'"
        for col in ("fitness", "sharpe", "calmar", "max_dd", "cagr", "trades")
    ),
)

# Every mutation attempt, failed ones included (the programs table keeps one row per iteration: its last attempt).
# Created on first use too, so stores made before it existed gain it without a migration.
_ATTEMPTS_TABLE = """CREATE TABLE IF NOT EXISTS mutation_attempts (
        id INTEGER PRIMARY KEY,
        experiment TEXT NOT NULL,
        iteration INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        mutator TEXT,
        model TEXT,
        status TEXT NOT NULL,
        error TEXT,
        blocks TEXT NOT NULL DEFAULT '{}',
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        elapsed_s REAL,
        created_at TEXT NOT NULL
    )"""
_ATTEMPT_COLUMNS: tuple[str, ...] = (
    "experiment", "iteration", "attempt", "request_id", "mutator", "model", "status", "error", "blocks",
    "input_tokens", "output_tokens", "cost_usd", "elapsed_s", "created_at",
)  # fmt: skip

# Upgrades of files written by earlier versions (see SQLiteFile.MIGRATIONS).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE programs ADD COLUMN code_key TEXT",
        "ALTER TABLE programs ADD COLUMN behavior_key TEXT",
        "ALTER TABLE programs ADD COLUMN duplicate_of INTEGER REFERENCES programs(id)",
        "ALTER TABLE programs ADD COLUMN duplicate_kind TEXT",
        *(f"CREATE INDEX IF NOT EXISTS ix_programs_{col} ON programs(experiment, {col}, id)"
          for col in ("code_key", "behavior_key")),
    ),
}

_PROGRAM_INSERT_COLUMNS: tuple[str, ...] = (
    "experiment", "parent_id", "generation", "iteration", "code", "blocks", "metrics", "behavior", "fitness",
    *METRIC_COLUMNS.values(),
    "status", "failure_kind", "failure_message", "stage", "mutator", "model", "input_tokens", "output_tokens",
    "cost_usd", "elapsed_s", "created_at", "is_seed", "archived", "pruned",
    "code_key", "behavior_key", "duplicate_of", "duplicate_kind",
)  # fmt: skip
_CREATED_AT_INDEX = _PROGRAM_INSERT_COLUMNS.index("created_at")
_FAILURE_KIND_INDEX = _PROGRAM_INSERT_COLUMNS.index("failure_kind")
_PRUNED_INDEX = _PROGRAM_INSERT_COLUMNS.index("pruned")
_INSERT_SQL = (
    f"INSERT INTO programs ({', '.join(_PROGRAM_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _PROGRAM_INSERT_COLUMNS)})"
)


class StoreError(Exception):
    """A store problem a person must act on; the message is one line naming the file."""


class ExperimentExistsError(StoreError, ValueError):
    """create_experiment on a name already present."""


class UnknownExperimentError(StoreError, LookupError):
    """An operation named an experiment the store does not hold."""


class DuplicateIterationError(StoreError, ValueError):
    """An (experiment, iteration) pair was recorded twice; resume must skip it, not redo it."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validate_experiment_name(name: str) -> str:
    """Names end up in paths and URLs, hence the narrow alphabet."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise ValueError(f"experiment name {name!r} is invalid: use 1-64 letters, digits, '-' or '_'")
    return name


@dataclass
class Program:
    """One candidate strategy and everything known about it; `id` is None until stored.

    `status` is "ok", "screened" (rejected by the cheap screen stage) or a failure kind. Only `ok`,
    non-pruned programs may be parents. `behavior` is the evaluator's descriptor used for novelty:
    {"trades": int, "exposure": float, "returns": [periodic returns...]}.
    """

    experiment: str
    code: str
    blocks: dict[str, str] = field(default_factory=dict)
    id: int | None = None
    parent_id: int | None = None
    generation: int = 0
    iteration: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    fitness: float | None = None
    status: str = "ok"
    failure_kind: str | None = None
    failure_message: str | None = None
    stage: str | None = None
    mutator: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    elapsed_s: float | None = None
    behavior: dict[str, Any] | None = None
    is_seed: bool = False
    archived: bool = False
    pruned: bool = False
    created_at: str | None = None
    code_key: str | None = None
    behavior_key: str | None = None
    duplicate_of: int | None = None
    duplicate_kind: str | None = None  # "code" (result reused, no backtest) | "behavior" (traded alike)

    @property
    def is_eligible_parent(self) -> bool:
        return self.status == "ok" and not self.pruned and self.duplicate_of is None

    @property
    def is_duplicate(self) -> bool:
        return self.duplicate_of is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (orjson writes non-finite floats as null)."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ValueError (one line) for combinations the store must never hold."""
        validate_experiment_name(self.experiment)
        if self.status not in PROGRAM_STATUSES:
            raise ValueError(
                f"program status {self.status!r} is invalid: expected ok, screened or one of "
                f"{', '.join(sorted(FAILURE_KINDS))}"
            )
        if self.status in FAILURE_KINDS:
            if self.failure_kind not in (None, self.status):
                raise ValueError(f"program failure_kind {self.failure_kind!r} disagrees with status {self.status!r}")
        elif self.failure_kind is not None:
            raise ValueError(f"program with status {self.status!r} cannot have failure_kind {self.failure_kind!r}")
        if self.status == "ok" and finite_or_none(self.fitness) is None:
            raise ValueError(f"program with status 'ok' needs a finite fitness, got {self.fitness!r}")
        if self.stage is not None and self.stage not in STAGES:
            raise ValueError(f"program stage {self.stage!r} is invalid: expected static, screen or full")
        if self.iteration is not None and self.iteration < 0:
            raise ValueError(f"program iteration must be >= 0, got {self.iteration}")
        if (self.duplicate_of is None) != (self.duplicate_kind is None):
            raise ValueError("program duplicate_of and duplicate_kind must be given together")
        if self.duplicate_kind is not None and self.duplicate_kind not in DUPLICATE_KINDS:
            raise ValueError(f"program duplicate_kind {self.duplicate_kind!r} is invalid: expected code or behavior")


@dataclass
class Experiment:
    """One evolution run's identity and progress; `completed_iterations` drives exact resume."""

    name: str
    status: str
    config_toml: str = ""
    target_iterations: int = 0
    completed_iterations: int = 0
    random_seed: int | None = None
    data_hash: str | None = None
    nautilus_version: str | None = None
    toolkit_version: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    stop_reason: str | None = None
    eligible_count: int = 0  # ok, non-pruned programs: the current population

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _program_row(p: Program) -> tuple[Any, ...]:
    p.validate()
    failure_kind = p.status if p.status in FAILURE_KINDS else None
    metric_values = [finite_or_none(p.metrics.get(name)) for name in METRIC_COLUMNS]
    return (
        p.experiment, p.parent_id, int(p.generation), p.iteration, p.code,
        orjson.dumps(dict(p.blocks)).decode(),
        orjson.dumps(dict(p.metrics)).decode(),
        None if p.behavior is None else orjson.dumps(p.behavior).decode(),
        finite_or_none(p.fitness), *metric_values,
        p.status, failure_kind, p.failure_message, p.stage, p.mutator, p.model,
        int(p.input_tokens), int(p.output_tokens), float(p.cost_usd), p.elapsed_s,
        p.created_at or _now(), int(p.is_seed), int(p.archived), int(p.pruned or p.duplicate_of is not None),
        p.code_key, p.behavior_key, p.duplicate_of, p.duplicate_kind,
    )  # fmt: skip


def _program_from_row(row: sqlite3.Row) -> Program:
    return Program(
        id=row["id"],
        experiment=row["experiment"],
        parent_id=row["parent_id"],
        generation=row["generation"],
        iteration=row["iteration"],
        code=row["code"],
        blocks=orjson.loads(row["blocks"]),
        metrics=orjson.loads(row["metrics"]),
        behavior=None if row["behavior"] is None else orjson.loads(row["behavior"]),
        fitness=row["fitness"],
        status=row["status"],
        failure_kind=row["failure_kind"],
        failure_message=row["failure_message"],
        stage=row["stage"],
        mutator=row["mutator"],
        model=row["model"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cost_usd=row["cost_usd"],
        elapsed_s=row["elapsed_s"],
        created_at=row["created_at"],
        is_seed=bool(row["is_seed"]),
        archived=bool(row["archived"]),
        pruned=bool(row["pruned"]),
        code_key=row["code_key"],
        behavior_key=row["behavior_key"],
        duplicate_of=row["duplicate_of"],
        duplicate_kind=row["duplicate_kind"],
    )


def _experiment_from_row(row: sqlite3.Row) -> Experiment:
    return Experiment(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row is not a Mapping


def _metric_column(metric: str) -> str:
    col = METRIC_COLUMNS.get(metric, metric)
    if col not in _ORDERABLE:
        raise ValueError(f"unknown metric {metric!r}: expected fitness or one of {', '.join(METRIC_COLUMNS)}")
    return col


class ProgramStore(SQLiteFile):
    """The population and its history for any number of experiments in one SQLite file.

    Open once per process and share across threads; `close()` when done. `check=True` runs
    `PRAGMA quick_check` at open (linear in file size) so corruption is found before a run builds on it.
    """

    KIND = "store"
    ERROR = StoreError
    SCHEMA_VERSION = SCHEMA_VERSION
    SCHEMA = _SCHEMA
    TABLES = frozenset({"experiments", "programs"})
    MIGRATIONS = _MIGRATIONS

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout_s: float = 30.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        check: bool = True,
    ) -> None:
        # Parsed behaviour descriptors by program id: they are written once when an iteration is recorded, so
        # novelty-weighted selection need not re-read and re-parse 1,000 JSON rows on every draw.
        self._behaviors: dict[int, dict[str, Any] | None] = {}
        super().__init__(db_path, create=create, busy_timeout_s=busy_timeout_s, synchronous=synchronous, check=check)

    # ----------------------------------------------------------------------------- experiments

    def create_experiment(
        self,
        name: str,
        *,
        config_toml: str = "",
        target_iterations: int = 0,
        random_seed: int | None = None,
        data_hash: str | None = None,
        nautilus_version: str | None = None,
        toolkit_version: str | None = None,
        status: str = "running",
    ) -> Experiment:
        validate_experiment_name(name)
        _check_experiment_status(status)
        now = _now()
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO experiments (name, status, config_toml, target_iterations, random_seed,"
                    " data_hash, nautilus_version, toolkit_version, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        status,
                        config_toml,
                        int(target_iterations),
                        random_seed,
                        data_hash,
                        nautilus_version,
                        toolkit_version,
                        now,
                        now,
                    ),
                )
        except sqlite3.IntegrityError:
            raise ExperimentExistsError(f"experiment {name!r} already exists in store {self.path}") from None
        exp = self.get_experiment(name)
        assert exp is not None
        return exp

    def get_experiment(self, name: str) -> Experiment | None:
        row = self._conn().execute("SELECT * FROM experiments WHERE name = ?", (name,)).fetchone()
        return None if row is None else _experiment_from_row(row)

    def require_experiment(self, name: str) -> Experiment:
        exp = self.get_experiment(name)
        if exp is None:
            raise UnknownExperimentError(f"experiment {name!r} not found in store {self.path}")
        return exp

    def list_experiments(self) -> list[Experiment]:
        rows = self._conn().execute("SELECT * FROM experiments ORDER BY created_at, rowid").fetchall()
        return [_experiment_from_row(r) for r in rows]

    def update_experiment(
        self,
        name: str,
        *,
        status: str | None = None,
        stop_reason: str | None = None,
        target_iterations: int | None = None,
    ) -> Experiment:
        with self._write() as conn:
            self._update_experiment(
                conn, name, {"status": status, "stop_reason": stop_reason, "target_iterations": target_iterations}
            )
        return self.require_experiment(name)

    def set_experiment_status(self, name: str, status: str, stop_reason: str | None = None) -> Experiment:
        return self.update_experiment(name, status=status, stop_reason=stop_reason)

    def set_stop_reason(self, name: str, reason: str) -> Experiment:
        return self.update_experiment(name, stop_reason=reason)

    def _update_experiment(
        self, conn: sqlite3.Connection, name: str, fields: Mapping[str, Any], bump_completed: bool = False
    ) -> None:
        allowed = {"status", "stop_reason", "target_iterations"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(
                f"experiment update has unknown field(s) {', '.join(sorted(unknown))}: "
                f"expected {', '.join(sorted(allowed))}"
            )
        sets = {k: v for k, v in fields.items() if v is not None}
        if "status" in sets:
            _check_experiment_status(sets["status"])
        assignments = [f"{k} = ?" for k in sets] + ["updated_at = ?"]
        params: list[Any] = [*sets.values(), _now()]
        if bump_completed:
            assignments.append("completed_iterations = completed_iterations + 1")
        cur = conn.execute(f"UPDATE experiments SET {', '.join(assignments)} WHERE name = ?", (*params, name))
        if cur.rowcount == 0:
            raise UnknownExperimentError(f"experiment {name!r} not found in store {self.path}")

    # -------------------------------------------------------------------------------- programs

    def insert(self, program: Program) -> int:
        """Store a program (seed, failure or success) and return its id; `program.id` is set too."""
        row = _program_row(program)
        with self._write() as conn:
            pid = self._insert_row(conn, program, row)
        return pid

    def insert_many(self, programs: Iterable[Program]) -> list[int]:
        """Bulk insert in one transaction (imports, benchmarks); ids in input order."""
        progs = list(programs)
        rows = [_program_row(p) for p in progs]
        ids: list[int] = []
        with self._write() as conn:
            for p, row in zip(progs, rows, strict=True):
                ids.append(self._insert_row(conn, p, row))
        return ids

    def _insert_row(self, conn: sqlite3.Connection, program: Program, row: tuple[Any, ...]) -> int:
        try:
            cur = conn.execute(_INSERT_SQL, row)
        except sqlite3.IntegrityError as exc:
            msg = str(exc)
            if "UNIQUE" in msg and "iteration" in msg:
                raise DuplicateIterationError(
                    f"iteration {program.iteration} of experiment {program.experiment!r} is already recorded "
                    f"in store {self.path}"
                ) from None
            if "FOREIGN KEY" in msg:
                raise UnknownExperimentError(
                    f"cannot store program: experiment {program.experiment!r} or parent {program.parent_id} "
                    f"not found in store {self.path}"
                ) from None
            raise StoreError(f"store {self.path} refused program: {msg}") from None
        pid = cur.lastrowid
        assert pid is not None
        # The caller's object now mirrors the stored row.
        program.id = pid
        program.created_at = row[_CREATED_AT_INDEX]
        program.failure_kind = row[_FAILURE_KIND_INDEX]
        program.pruned = bool(row[_PRUNED_INDEX])
        return pid

    def record_iteration(self, program: Program, experiment_update: Mapping[str, Any] | None = None,
                         discarded: Sequence[Program] = ()) -> int:
        """Insert an iteration's program and bump the experiment's completed counter atomically.

        Either both happen or neither, so after a crash `completed_iterations` always equals the number of
        recorded iterations. `experiment_update` may set status, stop_reason, target_iterations. `discarded`
        are earlier attempts of the same iteration that were backtested but set aside (behaviour duplicates the
        mutator was asked to redo): stored first, in the same transaction, without an iteration number, so every
        backtest stays on record.
        """
        if program.is_seed or program.iteration is None:
            raise ValueError("record_iteration needs a non-seed program with an iteration number")
        if any(p.iteration is not None or p.is_seed for p in discarded):
            raise ValueError("discarded attempts carry no iteration number")
        rows = [_program_row(p) for p in discarded]
        row = _program_row(program)
        with self._write() as conn:
            for attempt, attempt_row in zip(discarded, rows, strict=True):
                self._insert_row(conn, attempt, attempt_row)
            pid = self._insert_row(conn, program, row)
            self._update_experiment(conn, program.experiment, dict(experiment_update or {}), bump_completed=True)
        return pid

    def get(self, program_id: int) -> Program | None:
        row = self._conn().execute("SELECT * FROM programs WHERE id = ?", (program_id,)).fetchone()
        return None if row is None else _program_from_row(row)

    def get_many(self, program_ids: Sequence[int]) -> list[Program]:
        """Programs in the order of `program_ids` (missing ids skipped)."""
        if not program_ids:
            return []
        rows = (
            self._conn()
            .execute(
                "SELECT * FROM programs WHERE id IN (SELECT value FROM json_each(?))",
                (orjson.dumps(list(program_ids)).decode(),),
            )
            .fetchall()
        )
        by_id = {r["id"]: _program_from_row(r) for r in rows}
        return [by_id[i] for i in program_ids if i in by_id]

    def seed(self, experiment: str) -> Program | None:
        row = (
            self._conn()
            .execute("SELECT * FROM programs WHERE experiment = ? AND is_seed = 1 ORDER BY id LIMIT 1", (experiment,))
            .fetchone()
        )
        return None if row is None else _program_from_row(row)

    def update_metrics(
        self,
        program_id: int,
        metrics: Mapping[str, Any],
        fitness: float | None,
        *,
        status: str | None = None,
        stage: str | None = None,
        failure_message: str | None = None,
        behavior: Mapping[str, Any] | None = None,
        elapsed_s: float | None = None,
        behavior_key: str | None = None,
    ) -> Program:
        """Replace a program's evaluation (e.g. a screened candidate that got its full backtest)."""
        current = self.get(program_id)
        if current is None:
            raise StoreError(f"program {program_id} not found in store {self.path}")
        updated = dataclasses.replace(
            current,
            metrics=dict(metrics),
            fitness=fitness,
            status=status or current.status,
            failure_kind=None,
            stage=stage or current.stage,
            failure_message=failure_message,
            behavior=dict(behavior) if behavior is not None else current.behavior,
            elapsed_s=elapsed_s if elapsed_s is not None else current.elapsed_s,
            behavior_key=behavior_key if behavior_key is not None else current.behavior_key,
        )
        row = dict(zip(_PROGRAM_INSERT_COLUMNS, _program_row(updated), strict=True))
        cols = [
            "metrics",
            "behavior",
            "fitness",
            *METRIC_COLUMNS.values(),
            "status",
            "failure_kind",
            "failure_message",
            "stage",
            "elapsed_s",
            "behavior_key",
        ]
        with self._write() as conn:
            conn.execute(
                f"UPDATE programs SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
                (*(row[c] for c in cols), program_id),
            )
        self._behaviors.pop(program_id, None)
        return updated

    def top_k(self, experiment: str, k: int, metric: str = "fitness", *, active_only: bool = False) -> list[Program]:
        """Best `ok` programs by `metric` (column or contract name; MaxDD/AnnVol ascending).

        Pruned programs are included unless `active_only`: the best ever found stays reportable. Duplicates
        never are: the first program that behaved so stands for them.
        """
        col = _metric_column(metric)
        direction = "ASC" if col in LOWER_IS_BETTER_COLUMNS else "DESC"
        where = (_ELIGIBLE if active_only else "status = 'ok'") + " AND duplicate_of IS NULL"
        rows = (
            self._conn()
            .execute(
                f"SELECT * FROM programs WHERE experiment = ? AND {where} AND {col} IS NOT NULL"
                f" ORDER BY {col} {direction}, id ASC LIMIT ?",
                (experiment, max(0, int(k))),
            )
            .fetchall()
        )
        return [_program_from_row(r) for r in rows]

    def find_by_code_key(self, experiment: str, key: str, *, max_id: int | None = None) -> Program | None:
        """The first evaluated program of ``experiment`` with this code key whose result may be reused.

        Results of transient failures (crash, timeout, memory: the worker's fault, not the program's) and rows
        that never reached the evaluator are not reusable. ``max_id`` limits the search to programs stored up to
        that id (the store as an iteration saw it when it started, so concurrency cannot change its course).
        """
        marks = ",".join("?" * len(TRANSIENT_FAILURES))
        row = (
            self._conn()
            .execute(
                "SELECT * FROM programs WHERE experiment = ? AND code_key = ? AND stage IS NOT NULL"
                f" AND status NOT IN ({marks}) AND id <= ? ORDER BY id LIMIT 1",
                (experiment, key, *sorted(TRANSIENT_FAILURES), _id_bound(max_id)),
            )
            .fetchone()
        )
        return None if row is None else _program_from_row(row)

    def find_by_behavior_key(self, experiment: str, key: str, *, max_id: int | None = None) -> Program | None:
        """The first program of ``experiment`` that behaved exactly so (same stage, metrics and equity)."""
        row = (
            self._conn()
            .execute(
                "SELECT * FROM programs WHERE experiment = ? AND behavior_key = ? AND id <= ? ORDER BY id LIMIT 1",
                (experiment, key, _id_bound(max_id)),
            )
            .fetchone()
        )
        return None if row is None else _program_from_row(row)

    def children(self, experiment: str, parent_id: int, *, max_id: int | None = None, limit: int = 16) -> list[Program]:
        """The latest ``limit`` evaluated children of ``parent_id`` (discarded attempts too), oldest first.

        What a mutator is told its earlier changes to this parent bought (``MutationRequest.siblings``).
        """
        rows = (
            self._conn()
            .execute(
                "SELECT * FROM programs WHERE experiment = ? AND parent_id = ? AND stage IS NOT NULL AND id <= ?"
                " ORDER BY id DESC LIMIT ?",
                (experiment, parent_id, _id_bound(max_id), max(0, int(limit))),
            )
            .fetchall()
        )
        return [_program_from_row(r) for r in reversed(rows)]

    def first_without_trades(self, experiment: str, *, max_id: int | None = None) -> int | None:
        """The program every evaluated program that never traded repeats (the first such one), if any."""
        row = (
            self._conn()
            .execute(
                "SELECT id, duplicate_of FROM programs WHERE experiment = ? AND trades = 0 AND stage IS NOT NULL"
                " AND status IN ('ok', 'screened') AND id <= ? ORDER BY id LIMIT 1",
                (experiment, _id_bound(max_id)),
            )
            .fetchone()
        )
        return None if row is None else int(row[1] or row[0])

    def max_program_id(self, experiment: str) -> int:
        """The largest program id of ``experiment`` (0 if none): a horizon for ``find_by_*_key``."""
        row = self._conn().execute("SELECT MAX(id) FROM programs WHERE experiment = ?", (experiment,)).fetchone()
        return 0 if row[0] is None else int(row[0])

    def duplicate_counts(self, experiment: str) -> dict[str, int]:
        """{"code": cache hits (no backtest), "behavior": backtests that repeated an earlier behaviour}."""
        rows = (
            self._conn()
            .execute(
                "SELECT duplicate_kind, COUNT(*) FROM programs WHERE experiment = ? AND duplicate_kind IS NOT NULL"
                " GROUP BY duplicate_kind",
                (experiment,),
            )
            .fetchall()
        )
        counts = dict.fromkeys(sorted(DUPLICATE_KINDS), 0)
        counts.update({str(r[0]): int(r[1]) for r in rows})
        return counts

    def lineage(self, program_id: int) -> list[Program]:
        """The program, its parent, … up to the root (seed), via a recursive CTE."""
        rows = (
            self._conn()
            .execute(
                """WITH RECURSIVE chain(id, depth) AS (
                   SELECT id, 0 FROM programs WHERE id = ?
                   UNION ALL
                   SELECT p.parent_id, c.depth + 1 FROM programs p JOIN chain c ON p.id = c.id
                   WHERE p.parent_id IS NOT NULL AND c.depth < 100000
               )
               SELECT p.* FROM chain c JOIN programs p ON p.id = c.id ORDER BY c.depth""",
                (program_id,),
            )
            .fetchall()
        )
        return [_program_from_row(r) for r in rows]

    def experiment_counters(self, experiment: str) -> dict[str, int | float]:
        """Counters derived from the programs table in one consistent read, so they agree between processes.

        A program whose mutation failed has ``stage`` NULL (it never reached the evaluator); every other row was
        evaluated (the seed included) except cache hits (``duplicate_kind = 'code'``), which reused a stored result.
        ``behavior_duplicates`` were backtested and traded exactly like an earlier program: wasted evaluations.
        """
        with self.snapshot() as conn:
            row = conn.execute(
                "SELECT COUNT(*),"
                " COALESCE(SUM(is_seed = 0), 0),"
                " COALESCE(SUM(is_seed = 0 AND stage IS NOT NULL), 0),"
                " COALESCE(SUM(stage IS NOT NULL AND duplicate_kind IS NOT 'code'), 0),"
                " COALESCE(SUM(status = 'ok' AND duplicate_kind IS NOT 'code'), 0),"
                " COALESCE(SUM(status = 'ok' AND pruned = 0), 0),"
                " COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost_usd), 0),"
                " COALESCE(SUM(duplicate_kind = 'code'), 0), COALESCE(SUM(duplicate_kind = 'behavior'), 0)"
                " FROM programs WHERE experiment = ?",
                (experiment,),
            ).fetchone()
        return {k: (float(v) if k == "cost_usd" else int(v)) for k, v in zip(EXPERIMENT_COUNTERS, row, strict=True)}

    def fitness_points(self, experiment: str) -> list[dict[str, Any]]:
        """Every program's (id, iteration, fitness, status, is_seed) in iteration order: the evolution plot."""
        rows = (
            self._conn()
            .execute(
                "SELECT id, iteration, fitness, status, is_seed FROM programs WHERE experiment = ?"
                " ORDER BY COALESCE(iteration, 0), id",
                (experiment,),
            )
            .fetchall()
        )
        return [
            {
                "id": r["id"],
                "iteration": r["iteration"] if r["iteration"] is not None else 0,
                "fitness": r["fitness"],
                "status": r["status"],
                "is_seed": bool(r["is_seed"]),
            }
            for r in rows
        ]

    def train_sharpes(self, experiment: str) -> list[float]:
        """Train Sharpe of every successful, non-duplicate candidate (the ledger in ``trials`` is the full record)."""
        sql = ("SELECT sharpe FROM programs WHERE experiment = ? AND status = 'ok' AND sharpe IS NOT NULL"
               " AND duplicate_of IS NULL")
        return [float(r[0]) for r in self._conn().execute(sql, (experiment,))]

    def count(self, experiment: str, status: str | None = None, *, active_only: bool = False) -> int:
        sql = "SELECT COUNT(*) FROM programs WHERE experiment = ?"
        params: list[Any] = [experiment]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if active_only:
            sql += " AND pruned = 0"
        return int(self._conn().execute(sql, params).fetchone()[0])

    def count_by_status(self, experiment: str) -> dict[str, int]:
        rows = (
            self._conn()
            .execute(
                "SELECT status, COUNT(*) FROM programs WHERE experiment = ? GROUP BY status ORDER BY status",
                (experiment,),
            )
            .fetchall()
        )
        return {r[0]: int(r[1]) for r in rows}

    def completed_iterations(self, experiment: str) -> list[int]:
        """Sorted iteration numbers already recorded (non-seed): resume runs exactly the missing ones."""
        rows = (
            self._conn()
            .execute(
                "SELECT iteration FROM programs WHERE experiment = ? AND is_seed = 0 AND iteration IS NOT NULL"
                " ORDER BY iteration",
                (experiment,),
            )
            .fetchall()
        )
        return [int(r[0]) for r in rows]

    def record_attempt(self, **fields: Any) -> int:
        """Store one mutation attempt (``_ATTEMPT_COLUMNS``; ``status`` is ``ok`` or the failure kind)."""
        values = dict(fields)
        values["blocks"] = orjson.dumps(values.get("blocks") or {}).decode()
        values.setdefault("created_at", _now())
        unknown = set(values) - set(_ATTEMPT_COLUMNS)
        if unknown:
            raise ValueError(f"record_attempt: unknown fields {', '.join(sorted(unknown))}")
        cols = [c for c in _ATTEMPT_COLUMNS if c in values]
        with self._write() as conn:
            conn.execute(_ATTEMPTS_TABLE)
            cur = conn.execute(
                f"INSERT INTO mutation_attempts ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                [values[c] for c in cols],
            )
        return int(cur.lastrowid or 0)

    def attempts(self, experiment: str, iteration: int | None = None) -> list[dict[str, Any]]:
        """Mutation attempts of an experiment (or one iteration), oldest first; failed attempts included."""
        conn = self._conn()
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mutation_attempts'").fetchone()\
                is None:
            return []
        sql = "SELECT * FROM mutation_attempts WHERE experiment = ?"
        params: list[Any] = [experiment]
        if iteration is not None:
            sql += " AND iteration = ?"
            params.append(iteration)
        rows = conn.execute(sql + " ORDER BY id", params).fetchall()
        return [{**dict(r), "blocks": orjson.loads(r["blocks"])} for r in rows]

    def max_iteration(self, experiment: str) -> int | None:
        row = (
            self._conn()
            .execute("SELECT MAX(iteration) FROM programs WHERE experiment = ? AND is_seed = 0", (experiment,))
            .fetchone()
        )
        return None if row[0] is None else int(row[0])

    def prune(self, experiment: str, population_size: int, archive_size: int, protect: Iterable[int] = ()) -> int:
        """Mark programs inactive so at most `population_size` `ok` programs stay parents; return how many.

        Kept: the seed(s), the archive (best `archive_size` by fitness, flagged `archived`), then the most
        recent programs up to `population_size` — recency rather than fitness for the rest, otherwise the
        archive would be the whole population and diversity would collapse onto one lineage. ``protect`` ids
        are kept too (the MAP-Elites cell champions, ``qd_archive.keep_ids``).
        """
        if archive_size < 0 or population_size < 1 or archive_size >= population_size:
            raise ValueError(
                f"prune needs 0 <= archive_size < population_size, got archive_size={archive_size}, "
                f"population_size={population_size}"
            )
        with self._write() as conn:
            archive = [r[0] for r in conn.execute(
                f"SELECT id FROM {_BY_FITNESS} WHERE experiment = ? AND {_ELIGIBLE}"
                " ORDER BY fitness DESC, id ASC LIMIT ?", (experiment, archive_size))]  # fmt: skip
            seeds = [r[0] for r in conn.execute(
                "SELECT id FROM programs WHERE experiment = ? AND is_seed = 1", (experiment,))]  # fmt: skip
            keep = set(archive) | set(seeds) | {int(i) for i in protect}
            slots = max(0, population_size - len(keep))
            recent = [r[0] for r in conn.execute(
                f"SELECT id FROM {_BY_ID} WHERE experiment = ? AND {_ELIGIBLE}"
                " AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY id DESC LIMIT ?",
                (experiment, orjson.dumps(sorted(keep)).decode(), slots))]  # fmt: skip
            keep.update(recent)
            keep_json = orjson.dumps(sorted(keep)).decode()
            conn.execute("UPDATE programs SET archived = 0 WHERE experiment = ? AND archived = 1", (experiment,))
            conn.execute(
                "UPDATE programs SET archived = 1 WHERE id IN (SELECT value FROM json_each(?))",
                (orjson.dumps(archive).decode(),),
            )
            cur = conn.execute(
                f"UPDATE programs SET pruned = 1 WHERE experiment = ? AND {_ELIGIBLE} AND is_seed = 0"
                " AND id NOT IN (SELECT value FROM json_each(?))",
                (experiment, keep_json),
            )
            pruned = int(cur.rowcount)
        if pruned:
            log.debug("pruned %d programs of %s", pruned, experiment)
        return pruned

    # ------------------------------------------------------------------ SQL primitives for selection

    def eligible_count(self, experiment: str) -> int:
        """Programs that may be parents (ok, not pruned); O(1), maintained by triggers."""
        row = self._conn().execute("SELECT eligible_count FROM experiments WHERE name = ?", (experiment,)).fetchone()
        return 0 if row is None else int(row[0])

    def eligible_id_at_rank(self, experiment: str, rank: int) -> int | None:
        """Id of the eligible program at 0-based fitness rank (best first, ties by id)."""
        row = (
            self._conn()
            .execute(
                f"SELECT id FROM {_BY_FITNESS} WHERE experiment = ? AND {_ELIGIBLE}"
                " ORDER BY fitness DESC, id ASC LIMIT 1 OFFSET ?",
                (experiment, int(rank)),
            )
            .fetchone()
        )
        return None if row is None else int(row[0])

    def parent_candidates(
        self, experiment: str, limit: int, *, with_behavior: bool = False
    ) -> list[tuple[int, float, dict[str, Any] | None]]:
        """(id, fitness, behavior) of the best `limit` eligible programs, best first, from the index."""
        conn = self._conn()
        rows = conn.execute(
            f"SELECT id, fitness FROM {_BY_FITNESS} WHERE experiment = ? AND {_ELIGIBLE}"
            " ORDER BY fitness DESC, id ASC LIMIT ?",
            (experiment, int(limit)),
        ).fetchall()
        if not with_behavior:
            return [(int(r[0]), float(r[1]), None) for r in rows]
        cache = self._behaviors
        missing = [int(r[0]) for r in rows if int(r[0]) not in cache]
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for pid, raw in conn.execute(f"SELECT id, behavior FROM programs WHERE id IN ({marks})", chunk):
                cache[int(pid)] = None if raw is None else orjson.loads(raw)
        if len(cache) > 50_000:  # bound the memory of a very long run; the best programs are re-read once
            keep = {int(r[0]) for r in rows}
            self._behaviors = cache = {k: v for k, v in cache.items() if k in keep}
        return [(int(r[0]), float(r[1]), cache.get(int(r[0]))) for r in rows]

    def random_eligible_id(self, experiment: str, rng: random.Random, attempts: int = 64) -> int | None:
        """A uniformly random eligible id without scanning the table.

        Rejection sampling over the [min, max] id range of eligible programs (point lookups on the primary
        key); if the range is too sparse, fall back to an exact uniform rank via OFFSET. Either branch is
        uniform, so the mixture is uniform.
        """
        conn = self._conn()
        ends = [
            conn.execute(
                f"SELECT id FROM {_BY_ID} WHERE experiment = ? AND {_ELIGIBLE} ORDER BY id {direction} LIMIT 1",
                (experiment,),
            ).fetchone()
            for direction in ("ASC", "DESC")
        ]
        if ends[0] is None or ends[1] is None:
            return None
        lo, hi = int(ends[0][0]), int(ends[1][0])
        for _ in range(attempts):
            cand = rng.randint(lo, hi)
            hit = conn.execute(
                f"SELECT 1 FROM programs WHERE id = ? AND experiment = ? AND {_ELIGIBLE}", (cand, experiment)
            ).fetchone()
            if hit is not None:
                return cand
        n = self.eligible_count(experiment)
        if n == 0:
            return None
        row = conn.execute(
            f"SELECT id FROM {_BY_ID} WHERE experiment = ? AND {_ELIGIBLE} ORDER BY id LIMIT 1 OFFSET ?",
            (experiment, rng.randrange(n)),
        ).fetchone()
        return None if row is None else int(row[0])

    # ----------------------------------------------------------------------------- trial ledger
    # Every evaluation that could have influenced a choice (train, a fold, validation, holdout), with the
    # program's hash and its Sharpe: the deflated Sharpe counts these. The table is created on first use so
    # that stores written before it existed still open (and gain a ledger when a holdout look is recorded).

    def _ensure_trials(self, conn: sqlite3.Connection) -> None:
        if getattr(self, "_trials_ready", False):
            return
        conn.execute(_TRIALS_TABLE)
        conn.execute(_TRIALS_INDEX)
        self._trials_ready = True

    def record_trials(self, experiment: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append ledger rows (keys of ``TRIAL_FIELDS``); returns how many were written, in one transaction."""
        now = _now()
        values = [
            (
                experiment,
                r.get("program_id"),
                str(r["program_hash"]),
                str(r.get("code_key") or r["program_hash"]),
                str(r["period"]),
                str(r.get("role") or "candidate"),
                str(r.get("status") or "ok"),
                finite_or_none(r.get("sharpe")),
                finite_or_none(r.get("sharpe_per_period")),
                int(r.get("n_obs") or 0),
                finite_or_none(r.get("trades")),
                r.get("behavior_key"),
                str(r.get("via") or ""),
                str(r.get("created_at") or now),
            )
            for r in rows
        ]
        if not values:
            return 0
        with self._write() as conn:
            self._ensure_trials(conn)
            conn.executemany(
                "INSERT INTO trials (experiment, program_id, program_hash, code_key, period, role, status, sharpe,"
                " sharpe_per_period, n_obs, trades, behavior_key, via, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        return len(values)

    def trials(self, experiment: str | None = None, period: str | None = None) -> list[dict[str, Any]]:
        """Ledger rows in the order they were written (optionally one experiment and/or one period)."""
        with self._write() as conn:  # creating the table on first read needs the write lock
            self._ensure_trials(conn)
        sql, params = "SELECT * FROM trials WHERE 1 = 1", []
        if experiment is not None:
            sql += " AND experiment = ?"
            params.append(experiment)
        if period is not None:
            sql += " AND period = ?"
            params.append(period)
        rows = self._conn().execute(sql + " ORDER BY id", params).fetchall()
        return [dict(r) for r in rows]

    def trial_counts(self, experiment: str) -> dict[str, int]:
        """Ledger rows per period, e.g. ``{"train": 51, "validation": 6, "holdout": 1}``."""
        with self._write() as conn:
            self._ensure_trials(conn)
        rows = self._conn().execute(
            "SELECT period, COUNT(*) FROM trials WHERE experiment = ? GROUP BY period ORDER BY period", (experiment,)
        ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def evaluated_programs(self, experiment: str) -> list[Program]:
        """Every program that reached a backtest (ok or screened out), oldest first: the train trials."""
        rows = self._conn().execute(
            "SELECT * FROM programs WHERE experiment = ? AND status IN ('ok', 'screened') ORDER BY id", (experiment,)
        ).fetchall()
        return [_program_from_row(r) for r in rows]


def _id_bound(max_id: int | None) -> int:
    return (1 << 62) if max_id is None else int(max_id)


def _check_experiment_status(status: str) -> None:
    if status not in EXPERIMENT_STATUSES:
        raise ValueError(f"experiment status {status!r} is invalid: expected {', '.join(sorted(EXPERIMENT_STATUSES))}")
