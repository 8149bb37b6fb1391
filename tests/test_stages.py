"""Stage generations: outputs switch as one unit, readers verify the bytes they read."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import polars as pl
import pytest

from c360_dagster.domain.core import stages
from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.io import write_text_atomic
from c360_dagster.domain.ingest.loader import read_customer_360
from c360_dagster.domain.ingest.view import STAGE, Customer360, save_manifest, table_path


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write(root, files: dict[str, bytes], stage: str = "pack") -> stages.StageWriter:
    with stages.write_stage(root, stage) as out:
        for path, data in files.items():
            out.write_bytes(path, data)
    return out


def _leftovers(root) -> list[str]:
    """Everything under `stages/` but the live link and generation of each stage."""
    found = []
    for stage_dir in sorted((root / "stages").iterdir()):
        if stage_dir.name == stages.STAGING:
            found += [str(p) for p in stage_dir.iterdir()]
            continue
        live = os.readlink(stage_dir / stages.LIVE)
        found += [str(p) for p in stage_dir.iterdir() if p.name not in (stages.LIVE, live)]
    return found


def test_a_generation_is_read_back_verified_through_its_manifest(tmp_path):
    out = _write(tmp_path, {"pack/a.md": b"alpha\n", "pack.bin": b"\x00\x01"})
    manifest = (tmp_path / "stages" / "pack" / "live" / "stage.json").read_bytes()
    assert out.manifest_hash == _sha(manifest)
    assert os.readlink(tmp_path / "stages" / "pack" / "live") == "g-" + hashlib.sha256(manifest).hexdigest()[:16]
    assert out.hashes == {"pack/a.md": _sha(b"alpha\n"), "pack.bin": _sha(b"\x00\x01")}
    # Public paths are links into the live generation.
    assert os.readlink(tmp_path / "pack" / "a.md") == "../stages/pack/live/pack/a.md"
    assert (tmp_path / "pack" / "a.md").read_bytes() == b"alpha\n"
    stored = stages.open_stage(tmp_path, "pack")
    assert stored.manifest_hash == out.manifest_hash
    assert stored.read_bytes("pack.bin") == b"\x00\x01"
    assert _leftovers(tmp_path) == []


def test_the_same_outputs_make_the_same_generation_and_switch_nothing(tmp_path):
    first = _write(tmp_path, {"x.txt": b"same\n"})
    live = tmp_path / "stages" / "pack" / "live"
    inode = os.lstat(live).st_ino
    again = _write(tmp_path, {"x.txt": b"same\n"})
    assert again.manifest_hash == first.manifest_hash and os.lstat(live).st_ino == inode


def test_a_changed_file_is_refused_naming_it(tmp_path):
    _write(tmp_path, {"frames/t.parquet": b"rows", "t.json": b"{}\n"})
    (tmp_path / "t.json").write_bytes(b'{"forged": 1}\n')  # through the public link
    stored = stages.open_stage(tmp_path, "pack")
    assert stored.read_bytes("frames/t.parquet") == b"rows"
    with pytest.raises(
        stages.IntegrityError, match=r"stages/pack/g-[0-9a-f]{16}/t\.json: content hash sha256:"
    ) as caught:
        stored.read_bytes("t.json")
    assert caught.value.code == "ARTIFACT_CORRUPT" and "Rebuild the pack stage" in str(caught.value)


def test_an_edited_manifest_is_refused(tmp_path):
    _write(tmp_path, {"t.json": b"{}\n"})
    manifest = tmp_path / "stages" / "pack" / "live" / "stage.json"
    manifest.write_text(manifest.read_text().replace("sha256:", "sha256:0"))
    with pytest.raises(stages.IntegrityError, match="does not match its generation's name"):
        stages.open_stage(tmp_path, "pack")


def test_a_failure_mid_write_leaves_the_previous_generation_and_nothing_else(tmp_path):
    _write(tmp_path, {"pack/a.md": b"old a\n", "pack/b.md": b"old b\n"})
    with pytest.raises(OSError, match="disk full"), stages.write_stage(tmp_path, "pack") as out:
        out.write_bytes("pack/a.md", b"new a\n")
        raise OSError("disk full")
    assert (tmp_path / "pack" / "a.md").read_bytes() == b"old a\n"
    assert stages.open_stage(tmp_path, "pack").read_bytes("pack/b.md") == b"old b\n"
    assert _leftovers(tmp_path) == []


def test_a_file_the_new_generation_lacks_loses_its_public_link(tmp_path):
    _write(tmp_path, {"pack/index.md": b"1\n", "pack.pptx": b"deck"})
    _write(tmp_path, {"pack/index.md": b"2\n", "pack/slides.md": b"slides\n"})
    assert not os.path.lexists(tmp_path / "pack.pptx")
    assert sorted(p.name for p in (tmp_path / "pack").iterdir()) == ["index.md", "slides.md"]


def test_a_new_public_link_is_made_in_place_and_one_over_a_path_in_use_replaces_it_in_one_step(tmp_path, monkeypatch):
    (tmp_path / "pack").mkdir()
    (tmp_path / "pack" / "file.md").write_bytes(b"an old output\n")  # a file where the link goes
    os.symlink("elsewhere", tmp_path / "pack" / "other.md")  # a link to something else
    made, replaced = [], []
    symlink, replace = os.symlink, os.replace
    monkeypatch.setattr(stages.os, "symlink", lambda target, path: made.append(str(path)) or symlink(target, path))
    monkeypatch.setattr(stages.os, "replace", lambda old, new: replaced.append(str(new)) or replace(old, new))
    _write(tmp_path, {"pack/file.md": b"1\n", "pack/new.md": b"2\n", "pack/other.md": b"3\n"})
    for name, data in (("file.md", b"1\n"), ("new.md", b"2\n"), ("other.md", b"3\n")):
        assert os.readlink(tmp_path / "pack" / name) == f"../stages/pack/live/pack/{name}"
        assert (tmp_path / "pack" / name).read_bytes() == data
    public = [str(tmp_path / "pack" / name) for name in ("file.md", "new.md", "other.md")]
    # The new one is made where it goes; the two in use are replaced by a link renamed over them.
    assert [path for path in made if path in public] == [public[1]]
    assert [path for path in replaced if path in public] == [public[0], public[2]]
    # A second writer of the same files finds every link right and touches none.
    made.clear(), replaced.clear()
    _write(tmp_path, {"pack/file.md": b"4\n", "pack/new.md": b"2\n", "pack/other.md": b"3\n"})
    assert [path for path in made + replaced if path in public] == []
    assert (tmp_path / "pack" / "file.md").read_bytes() == b"4\n"


def test_what_a_dead_writer_left_is_removed_by_the_next_one(tmp_path):
    _write(tmp_path, {"x.txt": b"1\n"})
    dead = tmp_path / "stages" / stages.STAGING / "pack.999999999"
    (dead / "half").mkdir(parents=True)
    never_switched = tmp_path / "stages" / "pack" / "g-0123456789abcdef"
    never_switched.mkdir()
    stages.sweep_staging(tmp_path)
    assert not dead.exists()
    _write(tmp_path, {"x.txt": b"2\n"})
    assert not never_switched.exists() and _leftovers(tmp_path) == []


def test_each_lock_sweeps_only_its_own_staging_folder(tmp_path):
    staging = tmp_path / "stages" / stages.STAGING
    live = {
        None: staging / "pack.999999998",
        "0": staging / stages.SHARD_STAGING / "0" / "pack~0.999999998",
        "1": staging / stages.SHARD_STAGING / "1" / "pack~1.999999998",
    }
    for folder in live.values():
        (folder / "half").mkdir(parents=True)
    stages.sweep_staging(tmp_path, "0")  # shard 0's writer: the project's and shard 1's writers are alive
    assert not live["0"].exists() and live[None].exists() and live["1"].exists()
    stages.sweep_staging(tmp_path)  # the project's writer: the shards' writers hold their own locks
    assert not live[None].exists() and live["1"].exists()
    with stages.write_stage(tmp_path, "shards/1/pack", shard="1") as out:
        out.write_bytes("shards/1/x.txt", b"1\n")
    assert (tmp_path / "shards" / "1" / "x.txt").read_bytes() == b"1\n"
    assert live["1"].exists()  # a writer leaves the staging folder of its own lock's other processes to the sweep
    stages.sweep_staging(tmp_path, "1")
    assert list((staging / stages.SHARD_STAGING / "1").iterdir()) == []


def test_a_reader_of_a_replaced_generation_refuses_clearly(tmp_path):
    _write(tmp_path, {"x.txt": b"1\n"})
    stored = stages.open_stage(tmp_path, "pack")
    _write(tmp_path, {"x.txt": b"2\n"})  # switches and removes the generation `stored` resolved
    with pytest.raises(C360Error, match="another run replaced the pack output while this one read it") as caught:
        stored.read_bytes("x.txt")
    assert caught.value.code == "STAGE_CHANGED"
    assert stages.open_stage(tmp_path, "pack").read_bytes("x.txt") == b"2\n"


def test_a_missing_stage_says_so(tmp_path):
    with pytest.raises(C360Error, match="no health output under") as caught:
        stages.open_stage(tmp_path, "health")
    assert caught.value.code == "STAGE_MISSING"


def test_the_view_round_trips_through_its_stage_with_account_predicates(small_dir, tmp_path):
    view = read_customer_360(small_dir)
    with stages.write_stage(tmp_path, STAGE) as out:
        for name, table in view.tables.items():
            out.write_frame(table_path(name), table)
        save_manifest(out, view.as_of.isoformat(), view.counts(), view.source_hashes, view.warnings)
    stored = stages.open_stage(tmp_path, STAGE)
    back = Customer360.open(stored)
    assert back.stored_hash == out.manifest_hash
    assert all(back.tables[name].equals(view.tables[name]) for name in view.tables)
    one = Customer360.open(stored, ["BETA-002"])
    assert one.accounts["account_id"].to_list() == ["BETA-002"]
    assert one.usage.height == 1 and one.usage["account_id"].to_list() == ["BETA-002"]
    (tmp_path / "stages" / STAGE / "live" / table_path("contacts")).write_bytes(b"not read")
    part = Customer360.open(stored, tables=("subs", "accounts"))
    assert sorted(part.tables) == ["accounts", "subs"] and part.subs.equals(view.subs)
    with pytest.raises(stages.IntegrityError):
        Customer360.open(stored)


def test_a_frame_written_into_a_stage_is_read_back_by_account_predicate(tmp_path):
    frame = pl.DataFrame({"account_id": [f"A{i:06d}" for i in range(40_000)], "score": list(range(40_000))})
    with stages.write_stage(tmp_path, "health") as out:
        digest = out.write_frame("frames/health.parquet", frame)
    assert digest == _sha((tmp_path / "frames" / "health.parquet").read_bytes())
    read = stages.open_stage(tmp_path, "health").read_frame("frames/health.parquet", ["A000007", "A039999"])
    assert read["score"].to_list() == [7, 39_999]


def test_verify_reads_every_shards_live_generations_too(tmp_path):
    _write(tmp_path, {"x.txt": b"whole book\n"})
    for shard in ("0", "1"):
        _write(stages.shard_root(tmp_path, shard), {"x.txt": f"shard {shard}\n".encode(), "y.txt": b"y\n"})
    assert stages.shard_root(tmp_path, "1") == tmp_path / "shards" / "1"
    (tmp_path / "shards" / "old").mkdir()  # not a shard's folder: not read
    assert stages.verify_live_stages(tmp_path, {}) == 5
    edited = stages.shard_root(tmp_path, "1") / "x.txt"
    edited.resolve().write_bytes(b"edited in place\n")
    with pytest.raises(stages.IntegrityError, match=r"shards/1/stages/pack/g-[0-9a-f]{16}/x\.txt"):
        stages.verify_live_stages(tmp_path, {})


def test_verify_holds_live_outputs_to_what_the_log_signed(tmp_path):
    """A generation written whole by someone else (file and manifest consistent, `live` switched
    to it), or an older one switched back, passes the manifest check; it is caught because its
    bytes are not the ones the latest signed event recorded, in the main log or the shard's."""
    signed_report = _write(tmp_path, {"reports/health.json": b"signed\n", "notes.txt": b"n\n"}).hashes
    signed_shard = _write(stages.shard_root(tmp_path, "0"), {"frames/health.parquet": b"frame\n"}).hashes
    signed = {
        None: {"health.json": signed_report["reports/health.json"], "view": "sha256:" + "0" * 64},
        "0": {"health.parquet": signed_shard["frames/health.parquet"]},
    }
    assert stages.verify_live_stages(tmp_path, signed) == 3

    _write(tmp_path, {"reports/health.json": b"forged\n", "notes.txt": b"n\n"})  # a valid generation, never signed
    assert stages.verify_live_stages(tmp_path, {}) == 3  # the manifest alone cannot tell
    with pytest.raises(stages.IntegrityError, match=r"reports/health\.json: .* not the health\.json the signed log"):
        stages.verify_live_stages(tmp_path, signed)

    _write(tmp_path, {"reports/health.json": b"signed\n", "notes.txt": b"n\n"})
    _write(stages.shard_root(tmp_path, "0"), {"frames/health.parquet": b"older frame\n"})
    with pytest.raises(stages.IntegrityError, match=r"shards/0/stages/pack/g-[0-9a-f]{16}/frames/health\.parquet"):
        stages.verify_live_stages(tmp_path, signed)


def test_atomic_writes_remove_only_dead_writers_temp_files(tmp_path):
    target = tmp_path / "c360.prom"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_temp = tmp_path / f".c360.prom.{dead.stdout.strip()}.abc.tmp"
    live_temp = tmp_path / f".c360.prom.{os.getppid()}.abc.tmp"  # a process that exists
    dead_temp.write_text("half")
    live_temp.write_text("busy")
    write_text_atomic(target, "x 1\n")
    assert target.read_text() == "x 1\n"
    assert not dead_temp.exists() and live_temp.exists()


def test_a_batch_of_stages_syncs_every_file_before_any_switch_and_goes_live_together(tmp_path, monkeypatch):
    _write(tmp_path, {"a/x.md": b"old a\n"}, stage="a")
    synced: list[list[str]] = []

    def record(paths):
        synced.append(sorted(str(path.relative_to(tmp_path)) for path in paths))

    def switch(path, target, scratch):
        if path.name == stages.LIVE:  # not a public path's link
            synced.append([f"switch {path.parent.name}"])
        os.symlink(target, scratch / "link")
        os.replace(scratch / "link", path)

    monkeypatch.setattr(stages, "sync_paths", record)
    monkeypatch.setattr(stages, "_replace_with_link", switch)
    with stages.write_stages(tmp_path) as batch:
        batch.stage("a").write_bytes("a/x.md", b"new a\n")
        batch.stage("b").write_json("b.json", {"b": 1})
    staging = f"stages/{stages.STAGING}"
    pid = os.getpid()
    assert synced == [
        # Every file, manifest and folder of both generations, in their staging folders...
        sorted(
            [f"{staging}/a.{pid}/a/x.md", f"{staging}/a.{pid}/stage.json", f"{staging}/a.{pid}/a", f"{staging}/a.{pid}"]
            + [f"{staging}/b.{pid}/b.json", f"{staging}/b.{pid}/stage.json", f"{staging}/b.{pid}"]
        ),
        # ...then both generations' renames into place, then the two switches, synced once each.
        ["stages/a", "stages/b"],
        ["switch a"],
        ["switch b"],
        ["stages/a", "stages/b"],
    ]
    assert (tmp_path / "a" / "x.md").read_bytes() == b"new a\n"
    assert stages.open_stage(tmp_path, "b").read_json("b.json") == {"b": 1}
    assert _leftovers(tmp_path) == []


def test_a_failure_in_a_batch_switches_none_of_its_stages(tmp_path):
    _write(tmp_path, {"a/x.md": b"old a\n"}, stage="a")
    with pytest.raises(OSError, match="disk full"), stages.write_stages(tmp_path) as batch:
        batch.stage("a").write_bytes("a/x.md", b"new a\n")
        batch.stage("b").write_bytes("b.md", b"new b\n")
        raise OSError("disk full")
    assert (tmp_path / "a" / "x.md").read_bytes() == b"old a\n"
    assert not (tmp_path / "stages" / "b" / stages.LIVE).exists()
    assert _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="already in this batch"), stages.write_stages(tmp_path) as batch:
        batch.stage("a")
        batch.stage("a")
