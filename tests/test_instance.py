"""The project's Dagster instance: created once under a lock, and a damaged one is named with its fix."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from c360_dagster.console import main
from c360_dagster.instance import DAGSTER_YAML, READY_MARKER, ensure_dagster_home

REPO = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path) -> Path:
    for folder in ("fixtures", "configs", "contracts"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    return tmp_path


def _schema_versions(home: Path) -> dict[str, list[str]]:
    """Each SQLite storage's alembic version rows (one row each in a healthy instance)."""
    versions = {}
    for db in sorted(home.rglob("*.db")):
        with sqlite3.connect(db) as connection:
            rows = connection.execute("select version_num from alembic_version").fetchall()
        versions[str(db.relative_to(home))] = sorted(row[0] for row in rows)
    return versions


def test_concurrent_first_runs_share_one_working_instance(forks, tmp_path):
    """Three `c360:load` at once on a project with no .dagster_home all succeed, and so does the next."""
    project = _project(tmp_path)
    env = dict(os.environ)
    env.pop("DAGSTER_HOME", None)  # the default: the project's own .dagster_home, not there yet
    command = ["c360", "c360:load", "--quiet"]
    runs = [forks.start(command, cwd=project, env=env) for _ in range(3)]
    outcomes = [run.communicate(timeout=300) for run in runs]
    assert [done.returncode for done in outcomes] == [0, 0, 0], outcomes
    home = project / ".dagster_home"
    assert (home / READY_MARKER).exists()
    versions = _schema_versions(home)
    assert versions and all(len(rows) <= 1 for rows in versions.values()), versions
    after = forks.run(command, cwd=project, env=env, timeout=300)
    assert after.returncode == 0, after.stderr


def test_a_deployments_instance_is_opened_once_a_process_and_never_marked_ready(tmp_path, monkeypatch):
    """A `dagster.yaml` other than the project's own is a deployment's (docs/deployment.md): its
    storage may be down later, so no marker says it was set up; this process opens it once."""
    home = tmp_path / "deployment_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML + "# the deployment's own settings\n", encoding="utf-8")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert ensure_dagster_home() == home
    assert not (home / READY_MARKER).exists()
    (home / "dagster.yaml").unlink()  # opened already: the second call does not look again
    assert ensure_dagster_home() == home
    assert not (home / "dagster.yaml").exists()


def test_a_damaged_instance_is_named_with_how_to_recover(tmp_path, monkeypatch, capsys):
    """An instance left with two schema heads (what unlocked first runs made) fails cleanly, writes nothing."""
    project = _project(tmp_path)
    monkeypatch.chdir(project)
    home = project / ".dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home()
    (home / READY_MARKER).unlink()  # as an instance created before the lock existed
    with sqlite3.connect(home / "history" / "runs.db") as connection:
        connection.execute("insert into alembic_version values ('5771160a95ad')")

    assert main(["c360:load", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("c360: INSTANCE_BROKEN: the Dagster instance in ")
    assert f"`mv {home} {home}.broken`" in err and "Traceback" not in err
    assert not (project / "artifacts").exists()

    shutil.move(home, f"{home}.broken")  # the fix the message gives
    assert main(["c360:load", "--quiet"]) == 0


@pytest.mark.untraced
def test_an_existing_instance_opens_without_reading_the_migration_scripts(tmp_path, monkeypatch):
    """Reopening asks alembic nothing (a fresh database still does), and runs stay in history."""
    import alembic.script
    import dagster as dg

    project = _project(tmp_path)
    monkeypatch.chdir(project)
    home = project / ".dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["c360:load", "--quiet"]) == 0

    def refuse(*args, **kwargs):
        raise AssertionError("alembic's migration scripts were read")

    monkeypatch.setattr(alembic.script.ScriptDirectory, "from_config", refuse)
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records()
        events = instance.all_logs(runs[0].dagster_run.run_id)
    assert [record.dagster_run.job_name for record in runs] == ["c360_load"]
    assert runs[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert any(event.dagster_event and event.dagster_event.is_step_materialization for event in events)
    assert {str(db.relative_to(home)) for db in home.rglob("*.db")} == {
        "event_log.db",
        "history/runs.db",
        "schedules/schedules.db",
    }

    (home / "history" / "runs.db").unlink()  # a database to create: Dagster's own path, which asks
    with pytest.raises(AssertionError, match="migration scripts were read"):
        dg.DagsterInstance.get()


def _schema(home: Path) -> dict[str, list[tuple[str, str]]]:
    """Each SQLite storage's tables and indexes, as SQLite keeps their definitions."""
    schema = {}
    for db in sorted(home.rglob("*.db")):
        with sqlite3.connect(db) as connection:
            rows = connection.execute(
                "select name, sql from sqlite_master where sql is not null order by name"
            ).fetchall()
        schema[str(db.relative_to(home))] = rows
    return schema


@pytest.mark.untraced
def test_a_fresh_instance_reads_the_migration_scripts_once(tmp_path, monkeypatch):
    """Creating the instance builds Alembic's map of Dagster's migration scripts once (Dagster's own
    path builds it six times: the three storages each ask for the head, then stamp it), and makes the
    same databases, stamped alike, as Dagster's own path; Alembic is left as it was."""
    import dagster as dg
    from alembic.script import ScriptDirectory

    from_config = ScriptDirectory.__dict__["from_config"]
    load_revisions = ScriptDirectory._load_revisions
    maps_built = []

    def counted(self):
        maps_built.append(self.dir)
        return load_revisions(self)

    monkeypatch.setattr(ScriptDirectory, "_load_revisions", counted)
    ours = tmp_path / "ours"
    monkeypatch.setenv("DAGSTER_HOME", str(ours))
    ensure_dagster_home()
    assert len(maps_built) == 1
    assert ScriptDirectory.__dict__["from_config"] is from_config

    dagsters = tmp_path / "dagsters"
    dagsters.mkdir()
    (dagsters / "dagster.yaml").write_text((ours / "dagster.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("DAGSTER_HOME", str(dagsters))
    maps_built.clear()
    with dg.DagsterInstance.get():
        pass
    assert len(maps_built) == 6
    assert _schema_versions(ours) == _schema_versions(dagsters)
    assert _schema_versions(ours)["history/runs.db"] == [ScriptDirectory(maps_built[0]).get_current_head()]
    assert _schema(ours) == _schema(dagsters)


def test_a_fresh_instance_is_created_unsynced_then_synced_once_before_its_marker(tmp_path, monkeypatch):
    """SQLite syncs none of the creation's statements (`synchronous=OFF` where each storage stamps
    its schema), every file of the instance is synced before the ready marker exists, and
    connections opened afterwards are SQLite's default again."""
    import sqlalchemy
    from dagster._core.storage.event_log.sqlite import consolidated_sqlite_event_log
    from dagster._core.storage.runs.sqlite import sqlite_run_storage
    from dagster._core.storage.schedules.sqlite import sqlite_schedule_storage

    from c360_dagster import instance

    stamped_with = []
    for module in (sqlite_run_storage, sqlite_schedule_storage, consolidated_sqlite_event_log):
        stamp = module.stamp_alembic_rev

        def stamp_seen(config, connection, *args, _stamp=stamp, **kwargs):
            stamped_with.append(connection.exec_driver_sql("PRAGMA synchronous").scalar())
            return _stamp(config, connection, *args, **kwargs)

        monkeypatch.setattr(module, "stamp_alembic_rev", stamp_seen)
    home = tmp_path / ".dagster_home"
    synced = []
    monkeypatch.setattr(
        instance, "fsync_path", lambda path: synced.append((path.relative_to(home), (home / READY_MARKER).exists()))
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home()
    assert stamped_with == [0, 0, 0]
    files = {path.relative_to(home) for path in home.rglob("*") if path.name != READY_MARKER}
    assert {path for path, _ in synced} == files | {Path(".")}
    assert {Path("event_log.db"), Path("history/runs.db"), Path("schedules/schedules.db")} <= files
    assert not any(marker_there for _, marker_there in synced)
    assert (home / READY_MARKER).exists()
    with sqlalchemy.create_engine(f"sqlite:///{home / 'event_log.db'}").connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL, SQLite's default


@pytest.mark.untraced
def test_a_creation_killed_midway_is_finished_by_the_next_command(tmp_path, monkeypatch):
    """A process killed while it creates the instance (its run storage made, its event log not)
    leaves no marker; the next one finishes the instance, with the schema Dagster's own path makes."""
    import dagster as dg

    from c360_dagster.instance_storage import ProjectEventLogStorage

    home = tmp_path / ".dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    pid = os.fork()
    if pid == 0:  # the child dies where the event log would be created
        ProjectEventLogStorage.from_config_value = classmethod(lambda *args: os.kill(os.getpid(), 9))
        ensure_dagster_home()
        os._exit(0)
    assert os.WTERMSIG(os.waitpid(pid, 0)[1]) == 9
    assert (home / "history" / "runs.db").exists() and not (home / "event_log.db").exists()
    assert not (home / READY_MARKER).exists()

    ensure_dagster_home()
    assert (home / READY_MARKER).exists()
    with dg.DagsterInstance.get() as opened:
        opened.add_dynamic_partitions("account", ["A-1"])
        assert opened.get_dynamic_partitions("account") == ["A-1"]
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("DAGSTER_HOME", str(fresh))
    ensure_dagster_home()
    assert _schema_versions(home) == _schema_versions(fresh)
    assert _schema(home) == _schema(fresh)


def test_storages_keep_one_connection_per_process_and_none_across_fork(tmp_path, monkeypatch):
    """A run's many queries share one engine; a forked child opens its own and the parent's still works."""
    import dagster as dg

    home = tmp_path / ".dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        storages = [instance.run_storage, instance.event_log_storage, instance.schedule_storage]
        assert [type(storage).__module__ for storage in storages] == ["c360_dagster.instance_storage"] * 3
        instance.get_run_records(limit=1)
        instance.get_dynamic_partitions("account")
        engines = [storage._pooled_engine() for storage in storages]
        instance.add_dynamic_partitions("account", ["A-1"])
        assert [storage._pooled_engine() for storage in storages] == engines
        pid = os.fork()
        if pid == 0:  # the child: its own engines, and the instance works
            ok = all(storage._pooled_engine() is not engine for storage, engine in zip(storages, engines))
            ok = ok and instance.get_dynamic_partitions("account") == ["A-1"]
            os._exit(0 if ok else 1)
        assert os.waitpid(pid, 0)[1] == 0
        instance.add_dynamic_partitions("account", ["A-2"])
        assert instance.get_dynamic_partitions("account") == ["A-1", "A-2"]
        assert [storage._pooled_engine() for storage in storages] == engines


def test_storages_commit_without_syncing_the_write_ahead_log_each_time(tmp_path, monkeypatch):
    """`synchronous=NORMAL` on every storage's connections (SQLite's default, FULL, is 2), and what a
    killed process committed is there when the instance is opened again."""
    import dagster as dg

    home = tmp_path / ".dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        storages = [instance.run_storage, instance.event_log_storage, instance.schedule_storage]
        for storage in storages:
            with storage._pooled_connection() as connection:
                assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        pid = os.fork()
        if pid == 0:  # commits, then dies without closing or checkpointing anything
            instance.add_dynamic_partitions("account", ["A-1"])
            os.kill(os.getpid(), 9)
        os.waitpid(pid, 0)
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("account") == ["A-1"]


def _materialization(run_id: str, partition: str):
    import time

    import dagster as dg
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData

    return dg.EventLogEntry(
        error_info=None,
        level="DEBUG",
        user_message="",
        run_id=run_id,
        timestamp=time.time(),
        dagster_event=DagsterEvent(
            DagsterEventType.ASSET_MATERIALIZATION.value,
            "job",
            event_specific_data=StepMaterializationData(dg.AssetMaterialization("pack", partition=partition)),
        ),
    )


def test_an_event_and_a_batch_of_events_are_each_one_transaction(tmp_path, monkeypatch):
    """Dagster stores an asset event in up to three transactions; the project's event log commits
    once per event, and once per batch Dagster hands it."""
    import dagster as dg
    import sqlalchemy

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ".dagster_home"))
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        commits = []
        sqlalchemy.event.listen(storage._pooled_engine(), "commit", commits.append)
        storage.store_event(_materialization("run-1", "A-1"))
        assert len(commits) == 1
        storage.store_event_batch([_materialization("run-2", key) for key in ("A-2", "A-3", "A-4")])
        assert len(commits) == 2
        assert instance.get_materialized_partitions(dg.AssetKey("pack")) == {"A-1", "A-2", "A-3", "A-4"}
        assert [len(instance.all_logs(run)) for run in ("run-1", "run-2")] == [1, 3]
