"""ProgramStore on real SQLite files: schema, WAL, integrity checks, resume bookkeeping, pruning, concurrency."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import orjson
import pytest

from alpha_evolve.store import (
    SCHEMA_VERSION,
    DuplicateIterationError,
    ExperimentExistsError,
    Program,
    ProgramStore,
    StoreError,
    UnknownExperimentError,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path):
    s = ProgramStore(tmp_path / "store.db")
    yield s
    s.close()


def _prog(exp: str = "exp", **kw) -> Program:
    kw.setdefault("code", "class S: pass\n")
    kw.setdefault("fitness", 0.0)
    return Program(experiment=exp, **kw)


# ----------------------------------------------------------------------------------------- opening


def test_wal_mode_is_really_on(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with ProgramStore(path) as s:
        s.create_experiment("exp")
        s.insert(_prog(is_seed=True))
        assert Path(str(path) + "-wal").exists()
        raw = sqlite3.connect(path)
        try:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert raw.execute("SELECT COUNT(*) FROM programs").fetchone()[0] == 1
        finally:
            raw.close()


def test_garbage_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not sqlite at all \x00\xff" * 200)
    with pytest.raises(StoreError) as err:
        ProgramStore(path)
    msg = str(err.value)
    assert msg == f"store {path} is corrupt: file is not a database"
    assert "\n" not in msg


def test_damaged_pages_are_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    with ProgramStore(path) as s:
        s.create_experiment("exp")
        s.insert_many([_prog(code="x" * 500, fitness=float(i)) for i in range(400)])
    size = path.stat().st_size
    assert size > 20 * 4096
    with path.open("r+b") as f:  # leave page 1 (header + schema) intact, smash b-tree pages
        for page in range(3, size // 4096, 4):
            f.seek(page * 4096)
            f.write(b"\xa5" * 4096)
    with pytest.raises(StoreError, match=r"^store .*damaged\.db is corrupt: "):
        ProgramStore(path)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    ProgramStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 9")
    raw.close()
    with pytest.raises(StoreError) as err:
        ProgramStore(path)
    assert str(err.value) == f"store {path} has schema version 9; this alpha-evolve understands up to {SCHEMA_VERSION}"


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE customers (id INTEGER)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="is not an alpha-evolve store"):
        ProgramStore(path)


def test_missing_file_without_create(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        ProgramStore(tmp_path / "nope.db", create=False)
    assert not (tmp_path / "nope.db").exists()


def test_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with ProgramStore(path) as s:
        s.create_experiment("exp", target_iterations=5)
        pid = s.insert(_prog(is_seed=True, fitness=1.5))
    with ProgramStore(path, create=False) as s:
        assert s.get(pid) is not None
        assert s.require_experiment("exp").target_iterations == 5


# ------------------------------------------------------------------------------------- experiments


def test_experiment_lifecycle(store: ProgramStore) -> None:
    exp = store.create_experiment(
        "run-1_a",
        config_toml="[evolution]\niterations = 10\n",
        target_iterations=10,
        random_seed=42,
        data_hash="abc",
        nautilus_version="1.221.0",
        toolkit_version="0.1.0",
    )
    assert exp.status == "running" and exp.completed_iterations == 0 and exp.random_seed == 42
    assert exp.config_toml.startswith("[evolution]")
    with pytest.raises(ExperimentExistsError, match="'run-1_a' already exists"):
        store.create_experiment("run-1_a")
    store.create_experiment("other")
    assert [e.name for e in store.list_experiments()] == ["run-1_a", "other"]
    paused = store.set_experiment_status("run-1_a", "paused", stop_reason="user stop")
    assert paused.status == "paused" and paused.stop_reason == "user stop"
    assert store.set_stop_reason("run-1_a", "budget").stop_reason == "budget"
    with pytest.raises(ValueError, match="experiment status 'done' is invalid"):
        store.set_experiment_status("run-1_a", "done")
    with pytest.raises(UnknownExperimentError):
        store.set_experiment_status("ghost", "paused")
    assert store.get_experiment("ghost") is None


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "semi;colon", "dot.name", "ümlaut", "../up"])
def test_experiment_names_validated(store: ProgramStore, name: str) -> None:
    with pytest.raises(ValueError) as err:
        store.create_experiment(name)
    assert "\n" not in str(err.value) and "invalid" in str(err.value)


def test_experiment_name_limits_accepted(store: ProgramStore) -> None:
    store.create_experiment("x" * 64)
    store.create_experiment("A-9_z")
    assert {e.name for e in store.list_experiments()} >= {"x" * 64, "A-9_z"}


# ---------------------------------------------------------------------------------------- programs


def test_program_roundtrip_all_fields(store: ProgramStore) -> None:
    store.create_experiment("exp")
    seed_id = store.insert(_prog(is_seed=True, fitness=0.5))
    p = _prog(
        code="class X: pass\n",
        blocks={"indicators": "self.a = 1", "decision_logic": "pass"},
        parent_id=seed_id,
        generation=1,
        iteration=0,
        metrics={"Sharpe": 1.2, "Calmar": 0.8, "MaxDD": 0.2, "CAGR": 0.16, "Trades": 12, "Exposure": 0.4},
        fitness=0.8,
        stage="full",
        mutator="llm",
        model="claude-x",
        input_tokens=1000,
        output_tokens=200,
        cost_usd=0.012,
        elapsed_s=1.5,
        behavior={"trades": 12, "exposure": 0.4, "returns": [0.01, -0.02, 0.03]},
    )
    pid = store.insert(p)
    assert p.id == pid
    got = store.get(pid)
    assert got is not None
    assert got == p
    assert orjson.loads(orjson.dumps(got.to_dict()))["blocks"]["indicators"] == "self.a = 1"
    row = store._conn().execute("SELECT sharpe, calmar, max_dd, cagr, trades FROM programs WHERE id=?", (pid,))
    assert tuple(row.fetchone()) == (1.2, 0.8, 0.2, 0.16, 12.0)


def test_failure_programs_validated(store: ProgramStore) -> None:
    store.create_experiment("exp")
    with pytest.raises(ValueError, match="needs a finite fitness"):
        store.insert(_prog(fitness=None))
    with pytest.raises(ValueError, match="status 'boom' is invalid"):
        store.insert(_prog(status="boom"))
    with pytest.raises(ValueError, match="stage 'later' is invalid"):
        store.insert(_prog(stage="later"))
    failed = _prog(status="timeout", fitness=None, failure_message="exceeded 60 s", stage="full")
    store.insert(failed)
    got = store.get(failed.id or -1)
    assert got is not None and got.failure_kind == "timeout" and not got.is_eligible_parent
    with pytest.raises(UnknownExperimentError):
        store.insert(_prog("ghost"))


def test_update_metrics(store: ProgramStore) -> None:
    store.create_experiment("exp")
    pid = store.insert(_prog(status="screened", fitness=None, stage="screen"))
    assert store.eligible_count("exp") == 0
    updated = store.update_metrics(pid, {"Sharpe": 2.0}, 1.7, status="ok", stage="full")
    got = store.get(pid)
    assert got == updated and got.fitness == 1.7 and got.status == "ok" and got.metrics == {"Sharpe": 2.0}
    assert [p.id for p in store.top_k("exp", 5, metric="Sharpe")] == [pid]
    assert store.eligible_count("exp") == 1
    store.update_metrics(pid, {}, None, status="crash")
    assert store.eligible_count("exp") == 0


def test_top_k_orders_by_metric(store: ProgramStore) -> None:
    store.create_experiment("exp")
    ids = store.insert_many(
        [
            _prog(fitness=f, metrics={"Sharpe": s, "MaxDD": dd})
            for f, s, dd in [(1.0, 0.1, 0.3), (3.0, 0.5, 0.1), (2.0, 0.9, 0.5), (-1.0, 2.0, 0.05)]
        ]
    )
    store.insert(_prog(status="crash", fitness=None, metrics={"Sharpe": 99.0}))
    assert [p.id for p in store.top_k("exp", 2)] == [ids[1], ids[2]]
    assert [p.id for p in store.top_k("exp", 10, metric="sharpe")] == [ids[3], ids[2], ids[1], ids[0]]
    assert [p.id for p in store.top_k("exp", 1, metric="MaxDD")] == [ids[3]]  # lower is better
    with pytest.raises(ValueError, match="unknown metric 'sharpness'"):
        store.top_k("exp", 1, metric="sharpness")


def test_lineage_walks_to_root(store: ProgramStore) -> None:
    store.create_experiment("exp")
    root = store.insert(_prog(is_seed=True))
    chain = [root]
    for i in range(5):
        chain.append(store.insert(_prog(parent_id=chain[-1], generation=i + 1, iteration=i)))
    store.insert(_prog(parent_id=chain[2], iteration=99))  # a side branch, not in the lineage
    assert [p.id for p in store.lineage(chain[-1])] == list(reversed(chain))
    assert [p.id for p in store.lineage(root)] == [root]
    assert store.lineage(10_000) == []


def test_counts(store: ProgramStore) -> None:
    store.create_experiment("exp")
    store.insert_many([_prog(), _prog(), _prog(status="screened", fitness=None), _prog(status="syntax", fitness=None)])
    assert store.count("exp") == 4
    assert store.count("exp", "ok") == 2
    assert store.count_by_status("exp") == {"ok": 2, "screened": 1, "syntax": 1}


# ------------------------------------------------------------------------------ iteration bookkeeping


def test_record_iteration_is_atomic_and_unique(store: ProgramStore) -> None:
    store.create_experiment("exp", target_iterations=10)
    store.insert(_prog(is_seed=True))
    for i in (0, 1, 3):
        store.record_iteration(_prog(iteration=i))
    store.record_iteration(_prog(iteration=4, status="runtime", fitness=None), {"status": "paused"})
    exp = store.require_experiment("exp")
    assert exp.completed_iterations == 4 and exp.status == "paused"
    assert store.completed_iterations("exp") == [0, 1, 3, 4]
    assert store.max_iteration("exp") == 4

    with pytest.raises(DuplicateIterationError, match="iteration 3 of experiment 'exp' is already recorded"):
        store.record_iteration(_prog(iteration=3))
    with pytest.raises(DuplicateIterationError):
        store.insert(_prog(iteration=1))
    # The failed transaction changed nothing: neither a row nor the counter.
    assert store.require_experiment("exp").completed_iterations == 4
    assert store.count("exp") == 5
    # An invalid experiment update rolls the program insert back too.
    with pytest.raises(ValueError, match="status 'weird'"):
        store.record_iteration(_prog(iteration=7), {"status": "weird"})
    assert 7 not in store.completed_iterations("exp")
    with pytest.raises(ValueError):
        store.record_iteration(_prog(is_seed=True, iteration=8))


def test_seeds_may_share_iteration_numbers(store: ProgramStore) -> None:
    store.create_experiment("exp")
    store.insert(_prog(is_seed=True, iteration=0))
    store.record_iteration(_prog(iteration=0))  # the seed does not occupy iteration 0
    assert store.max_iteration("exp") == 0
    assert store.max_iteration("nothing") is None


# ----------------------------------------------------------------------------------------- pruning


def test_prune_keeps_archive_seed_and_bound(store: ProgramStore) -> None:
    store.create_experiment("exp")
    seed = store.insert(_prog(is_seed=True, fitness=-5.0))  # the worst program, kept anyway
    fits = [((i * 37) % 101) / 10 for i in range(60)]
    ids = [store.record_iteration(_prog(iteration=i, fitness=f, parent_id=seed)) for i, f in enumerate(fits)]
    for i in range(5):
        store.record_iteration(_prog(iteration=100 + i, status="crash", fitness=None))

    pruned = store.prune("exp", population_size=20, archive_size=5)
    assert pruned == 61 - 20
    active = [p for p in (store.get(i) for i in [seed, *ids]) if p is not None and not p.pruned]
    assert len(active) == 20 == store.eligible_count("exp")
    # The trigger-maintained counter agrees with a real count.
    real = store._conn().execute("SELECT COUNT(*) FROM programs WHERE status='ok' AND pruned=0").fetchone()[0]
    assert store.require_experiment("exp").eligible_count == real == 20
    best5 = sorted(zip(fits, ids, strict=True), key=lambda t: (-t[0], t[1]))[:5]
    archived = {p.id for p in active if p.archived}
    assert archived == {i for _, i in best5}
    assert seed in {p.id for p in active}
    # The rest of the population is the most recent programs.
    rest = sorted(p.id or 0 for p in active if p.id not in archived and p.id != seed)
    assert rest == sorted(i for i in ids if i not in archived)[-len(rest) :]
    # Pruned programs are kept as a record, failures are untouched.
    assert store.count("exp") == 66 and store.count("exp", "crash") == 5
    assert store.prune("exp", population_size=20, archive_size=5) == 0
    with pytest.raises(ValueError, match="archive_size < population_size"):
        store.prune("exp", population_size=5, archive_size=5)


# ------------------------------------------------------------------------------------- concurrency

_CHILD = textwrap.dedent(
    """
    import sys
    from alpha_evolve.store import DuplicateIterationError, Program, ProgramStore
    store = ProgramStore(sys.argv[1])
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    dup = 0
    for i in range(int(sys.argv[2]), int(sys.argv[3])):
        try:
            store.record_iteration(Program("exp", f"child {i}", iteration=i, fitness=float(i)))
        except DuplicateIterationError:
            dup += 1
    store.close()
    print(f"done {dup}", flush=True)
    """
)


def test_second_process_writing_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    store = ProgramStore(path)
    store.create_experiment("exp")
    store.insert(_prog(is_seed=True))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), "0", "300"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        # Overlap: iterations 150..449 — 150..299 are contested, each must end up recorded exactly once.
        parent_dup = 0
        for i in range(150, 450):
            try:
                store.record_iteration(_prog(code=f"parent {i}", iteration=i, fitness=float(i)))
            except DuplicateIterationError:
                parent_dup += 1
        line = child.stdout.readline().strip()
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
    assert line.startswith("done ")
    child_dup = int(line.split()[1])
    assert parent_dup + child_dup == 150
    assert store.completed_iterations("exp") == list(range(450))
    assert store.require_experiment("exp").completed_iterations == 450
    store.close()
    with ProgramStore(path) as again:  # quick_check at open
        assert again.count("exp") == 451


def test_threads_share_a_store(store: ProgramStore) -> None:
    store.create_experiment("exp")
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(50):
                store.record_iteration(_prog(iteration=offset + i, fitness=float(i)))
                store.top_k("exp", 3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.require_experiment("exp").completed_iterations == 200


def test_a_directory_or_a_file_missing_its_tables_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "adir"
    folder.mkdir()
    with pytest.raises(StoreError, match="is a directory, expected a SQLite file"):
        ProgramStore(folder)
    hollow = tmp_path / "hollow.sqlite"
    conn = sqlite3.connect(hollow)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    with pytest.raises(StoreError, match="is damaged: tables experiments, programs are missing"):
        ProgramStore(hollow)
