"""The chain on Dagster's distributed machinery, for real: the instance in PostgreSQL, the steps
on two Celery workers with Redis as broker, the outputs byte for byte those of an in-process run.

PostgreSQL and Redis are Debian's (`postgresql`, `redis-server`; .ci/run installs them), started
here on free local ports in throwaway folders and stopped afterwards; no system service is used.
The test fails (never skips) when they are missing: CI is meant to have them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from forked import Fork, ForkServer
from test_golden import output_hashes
from test_shards import SHARD_ONLY
from ui_support import REPO, _stop_group, free_port

from c360_dagster.console import main
from c360_dagster.defs.executors import BROKER_ENV, EXECUTOR_ENV, chosen_executor
from c360_dagster.defs.lake import LAKE_TABLES
from c360_dagster.domain.core.config import SCALE_FILE
from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.governance.lake import Lake, open_lake
from c360_dagster.instance import READY_MARKER, ensure_dagster_home
from c360_dagster.runner import ProjectPaths, run_chain
from c360_dagster.runner import _chain_layers as runner_chain_layers

POSTGRES_ROOT = Path("/usr/lib/postgresql")
START_SECONDS = 60
# A worker is three processes: dagster-celery (forked: tests/forked.py), then celery and its pool,
# which import Dagster: about 3 CPU-s on Python 3.11 and 3.14 alike; on 2 cores shared with the
# rest of the suite at a load of up to 20, two workers take up to about a minute (docs/development.md).
WORKER_START_SECONDS = 180
SHARDS = 4
RUN_SECONDS = 300


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL's bin folder; fails the test when there is none."""
    versions = sorted(POSTGRES_ROOT.glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    if not versions:
        pytest.fail(
            f"PostgreSQL is not installed under {POSTGRES_ROOT}: run `apt-get install -y postgresql` "
            "(.ci/run installs it) to run the scale-out test"
        )
    return versions[-1].parent


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is not installed: run `apt-get install -y redis-server` (.ci/run installs it)")
    return found


def as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root (CI's user): run it as Debian's `postgres` user then."""
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(
            "running as root, and there is no `postgres` user to run PostgreSQL as (Debian's package makes one)"
        )
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A fresh PostgreSQL cluster on a free port; yields its SQLAlchemy URL; always stopped and removed."""
    binaries = postgres_bin()
    # Not under pytest's tmp_path: its folders are private to this user, and the server may run as another.
    folder = Path(tempfile.mkdtemp(prefix="c360-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        as_postgres_user([str(binaries / "initdb"), "-D", str(data), "-U", "c360", "--auth=trust", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    server_options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log")]
    try:
        subprocess.run(
            as_postgres_user([*pg_ctl, "-w", "-t", str(START_SECONDS), "-o", server_options, "start"]),
            check=True,
            capture_output=True,
        )
        # psycopg2 named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which dagster-postgres does not use.
        yield f"postgresql+psycopg2://c360@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_postgres_user([*pg_ctl, "-m", "immediate", "stop"]), check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def redis() -> Iterator[str]:
    """A Redis on a free port, in memory only; yields its URL; always stopped."""
    import redis as redis_client

    port = free_port()
    server = subprocess.Popen(
        [redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        client = redis_client.Redis(port=port)
        deadline = time.monotonic() + START_SECONDS
        while True:
            with contextlib.suppress(redis_client.ConnectionError):
                if client.ping():
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not answer on port {port}")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop_group(server)


@contextlib.contextmanager
def celery_workers(forks: ForkServer, names: list[str], env: dict[str, str], cwd: Path, logs: Path) -> Iterator[None]:
    """Start one `dagster-celery worker` per name (one task at a time each); wait until all answer."""
    from celery import Celery

    command = ["dagster-celery", "worker", "start", "-A", "dagster_celery.app"]
    # dagster-celery starts `celery` from PATH: this interpreter's, not whichever comes first there.
    env = {**env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])}
    workers = []
    try:
        for name in names:
            workers.append(
                forks.start(
                    [*command, "-y", str(REPO / "deploy" / "celery.yaml"), "-n", name, "--", "--concurrency=1"],
                    cwd=cwd,
                    env=env,
                    stdout=logs / f"worker-{name}.log",
                    session=True,  # its own group: the celery process and its pool go with it
                )
            )
        app = Celery(broker=env[BROKER_ENV], backend=env[BROKER_ENV])
        started = time.monotonic()
        answered: set[str] = set()
        while len(answered) < len(names):
            answered |= {name.split("@")[0] for reply in app.control.ping(timeout=1.0) for name in reply}
            exited = [name for name, worker in zip(names, workers, strict=True) if worker.poll() is not None]
            waited = time.monotonic() - started
            if exited or waited > WORKER_START_SECONDS:
                pytest.fail(
                    f"waited {waited:.0f} s (at most {WORKER_START_SECONDS}) for the Celery workers "
                    f"{', '.join(names)} to answer a ping on {env[BROKER_ENV]}: answered {sorted(answered) or 'none'}, "
                    f"exited {exited or 'none'}; their logs:\n" + _tails(logs)
                )
        print(f"Celery workers answered after {time.monotonic() - started:.1f} s")
        yield
    finally:
        for worker in workers:
            _stop_group(worker)


def _tails(logs: Path) -> str:
    return "\n".join(f"{path.name}:\n{path.read_text(encoding='utf-8')[-2000:]}" for path in sorted(logs.glob("*.log")))


def scratch_project(root: Path) -> Path:
    """A project folder as a user has it: inputs, configs, contracts; the runs write artifacts/ into it."""
    root.mkdir(parents=True)
    for folder in ("fixtures", "configs", "contracts"):
        shutil.copytree(REPO / folder, root / folder)
    return root


@pytest.mark.scale
@pytest.mark.untraced
def test_four_shards_on_celery_workers_and_postgres_roll_up_to_the_bytes_of_one_shard_in_process(
    forks, tmp_path, monkeypatch
):
    started = time.monotonic()
    distributed, reference, logs = tmp_path / "distributed", tmp_path / "in_process", tmp_path / "logs"
    scratch_project(distributed)
    scratch_project(reference)
    logs.mkdir()
    # Where the workers write: four shards, and the lake many machines can share (Delta Lake
    # tables). The reference: one shard and the default DuckDB file.
    (distributed / "configs" / "customer" / SCALE_FILE).write_text(
        f"shards: {SHARDS}\nlake:\n  format: delta\n", encoding="utf-8"
    )

    # The reference: the same chain in this process, on a SQLite instance.
    monkeypatch.chdir(reference)
    run_chain("c360_chain", ProjectPaths(), progress=False)

    with postgres() as postgres_url, redis() as broker_url:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("C360_POSTGRES_URL", postgres_url)
        # The instance's tables made once, before several processes open it at the same time.
        ensure_dagster_home()
        # Not marked as made once, as the project's SQLite instance is: each process checks the database is there.
        assert not (home / READY_MARKER).exists()
        env = {
            **os.environ,
            EXECUTOR_ENV: "celery",
            BROKER_ENV: broker_url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        split, sharded, roll_ups = chain_layers(SHARDS)
        with celery_workers(forks, ["c360-a", "c360-b"], env, distributed, logs):
            # As a user without Dagster's daemon launches the chain of N shards: the split, then
            # every shard's run at once (their steps spread over the workers), then the roll-ups.
            finished([materialize(forks, split, env, distributed)], logs)
            finished([materialize(forks, sharded, env, distributed, str(s)) for s in range(SHARDS)], logs)
            finished([materialize(forks, roll_ups, env, distributed)], logs)
        storage, steps_by_worker = run_records()
        # The signed logs, appended to by steps in several worker processes, verify against the
        # heads the PostgreSQL instance witnessed.
        monkeypatch.chdir(distributed)
        assert main(["c360:verify", "--quiet"]) == 0

    assert storage == "PostgresRunStorage"
    # Both workers took steps: the runs really were spread over them.
    assert sorted(steps_by_worker) == ["c360-a", "c360-b"], steps_by_worker
    # The split, 8 steps of each shard (the 360, 3 stages, 4 lake tables), the roll-ups.
    assert sum(len(steps) for steps in steps_by_worker.values()) == 1 + 8 * SHARDS + len(roll_ups)

    expected = documents(reference / "artifacts")
    assert {"customer/360.json", "customer/health.json", "customer/signals.json", "customer/summary.md"} <= set(
        expected
    )
    assert documents(distributed / "artifacts") == expected
    delta, duckdb = project_lake(distributed), project_lake(reference)
    assert (delta.FORMAT, duckdb.FORMAT) == ("delta", "duckdb")
    # Every shard holds accounts and wrote their rows.
    assert sorted(set(delta.read_snapshot("account_health")["shard"])) == list(range(SHARDS))
    for table in LAKE_TABLES:
        rows = delta.read_snapshot(table).drop("shard")
        assert rows.height > 0, table
        assert rows.equals(duckdb.read_snapshot(table).drop("shard")), table
    print(f"scale-out test: {time.monotonic() - started:.1f} s wall")


def documents(artifacts: Path) -> dict[str, str]:
    """The hashes of the outputs that must not depend on the shard count (not the shards' own)."""
    return {path: digest for path, digest in output_hashes(artifacts).items() if path.split("/")[1] not in SHARD_ONLY}


def chain_layers(shards: int) -> tuple[list[str], list[str], list[str]]:
    """The chain's materializable assets: before the shards (the split), of each shard, after (the roll-ups)."""
    before, sharded, after = runner_chain_layers("c360_chain", shards)
    return [key for key in before if not key.startswith("inputs/")], sharded, after  # inputs/: observed, not made


def materialize(forks: ForkServer, keys: list[str], env: dict[str, str], cwd: Path, shard: str | None = None) -> Fork:
    """`dagster asset materialize` of these assets (of one shard), on the executor the environment names."""
    command = ["dagster", "asset", "materialize", "-m", "c360_dagster.definitions", "--select", ",".join(keys)]
    return forks.start([*command, *(["--partition", shard] if shard else [])], cwd=cwd, env=env)


def finished(runs: list[Fork], logs: Path) -> None:
    for run in runs:
        done = run.communicate(timeout=RUN_SECONDS)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:] + _tails(logs)


def project_lake(project: Path) -> Lake:
    """The lake of `project`, in whichever backend its scale.yaml names."""
    return open_lake(project / "configs" / "customer", project / "artifacts", project / "contracts" / "schemas")


def run_records() -> tuple[str, dict[str, list[str]]]:
    """The instance's storage class and, over its runs (all successful), the steps each Celery worker ran."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert runs and {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
        steps_by_worker: dict[str, list[str]] = {}
        for run in runs:
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                metadata = entry.dagster_event.engine_event_data.metadata if entry.dagster_event else {}
                if "Celery worker" in metadata:
                    worker = str(metadata["Celery worker"].value).split("@")[0]
                    steps_by_worker.setdefault(worker, []).append(str(metadata["step_keys"].value))
        return type(instance.run_storage).__name__, steps_by_worker


def test_the_executor_is_named_by_the_environment(monkeypatch):
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    assert chosen_executor().name == "in_process"
    for name in ("in_process", "multiprocess", "celery"):
        monkeypatch.setenv(EXECUTOR_ENV, name)
        assert chosen_executor().name == name


def test_an_unknown_executor_is_a_clean_config_error(monkeypatch):
    monkeypatch.setenv(EXECUTOR_ENV, "kubernetes")
    with pytest.raises(C360Error) as raised:
        chosen_executor()
    assert raised.value.code == "CONFIG_INVALID"
    assert "C360_EXECUTOR='kubernetes'" in str(raised.value)
    assert "in_process, multiprocess, celery, k8s" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "module", "install"),
    [
        ("celery", "dagster_celery", 'pip install -c constraints.txt -e ".[scale]"'),
        ("k8s", "dagster_k8s", "pip install dagster-k8s==0.29.27"),
    ],
)
def test_an_executor_whose_library_is_missing_says_how_to_install_it(monkeypatch, name, module, install):
    monkeypatch.setenv(EXECUTOR_ENV, name)
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it fails
    with pytest.raises(C360Error) as raised:
        chosen_executor()
    assert raised.value.code == "EXTRA_MISSING"
    assert install in str(raised.value)


def deployment_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml (the PostgreSQL instance), as docs/deployment.md sets it up."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.chdir(scratch_project(tmp_path / "project"))
    return home


def test_an_unset_database_url_is_one_clean_line_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    home = deployment_home(tmp_path, monkeypatch)
    monkeypatch.delenv("C360_POSTGRES_URL", raising=False)

    assert main(["c360:load", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"c360: INSTANCE_UNREACHABLE: the Dagster instance configured in {home / 'dagster.yaml'} cannot be opened "
        "(environment variable C360_POSTGRES_URL is not set); check the storage it names: its database reachable, "
        "the environment variables it reads set (docs/deployment.md)\n"
    )
    assert not Path("artifacts").exists()


def test_a_database_out_of_reach_is_one_clean_line_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    deployment_home(tmp_path, monkeypatch)
    monkeypatch.setenv("C360_POSTGRES_URL", f"postgresql+psycopg2://c360@127.0.0.1:{free_port()}/postgres")

    assert main(["c360:load", "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the driver's retry warnings
    assert err.startswith("c360: INSTANCE_UNREACHABLE: ")
    assert "too many retries for DB connection" in err
    assert not Path("artifacts").exists()
