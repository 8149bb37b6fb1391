"""Stage generations: a stage's outputs switch as one unit, and readers verify what they read.

A stage (`360`, `health`, `signals`, `renewals`, `playbooks/<id>`, `qbr_<id>`) writes every
file of its next generation into a staging folder, then a manifest naming each file's sha256,
and goes live by ONE atomic step: a symlink swapped with `os.replace`. Under a root folder
(`artifacts/customer`):

    stages/<stage>/live -> g-<hash16>         the live generation (the only thing that changes)
    stages/<stage>/g-<hash16>/stage.json      {"files": {path: sha256}, "stage": <stage>}
    stages/<stage>/g-<hash16>/<path>          each file, at its public path
    stages/.staging/<stage>.<pid>/            a generation being written (under the project lock)
    stages/.staging/shards/<k>/<stage>.<pid>/ one being written under shard k's lock
    <path> -> stages/<stage>/live/<path>      each file's public path: a relative symlink

A generation is named by its manifest's hash, so the same outputs give the same folder and a
rerun that changes nothing switches nothing. A process killed at any instant leaves the old
generation live or the new one, never a mix; what it left behind (a staging folder, a
generation never switched to) is removed by the next writer holding the same lock: each lock
(the project's, or one shard's) owns its own staging folder, so shards writing in parallel
never sweep each other's work. A reader resolves `live` once,
reads each file's bytes once, hashes them and refuses a mismatch with the manifest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.failpoints import failpoint
from c360_dagster.domain.core.io import (
    atomic_writer,
    canonical_json,
    sha256_bytes,
    sha256_file,
    sync_paths,
    write_bytes_atomic,
    write_chunks_atomic,
    write_json_atomic,
    write_text_atomic,
)
from c360_dagster.domain.core.locking import checked_shard, is_shard_key

STAGES = "stages"
LIVE = "live"
MANIFEST = "stage.json"
STAGING = ".staging"
SHARD_STAGING = "shards"  # under STAGING; no stage's staging folder is named so (theirs end in .<pid>)
SHARD_ROOTS = "shards"  # beside STAGES: each shard's own stages root
GENERATION_PREFIX = "g-"
# Small row groups with statistics let a per-account read skip most of a large table.
ROW_GROUP_ROWS = 16_384
# One data page per column of a row group. Polars splits pages by an estimate of the column's
# bytes that counts a slice's whole underlying buffer, so with its 1 MiB default the same rows
# written from a view into a larger frame and from their own buffers (read back, merged from
# shards) got different pages: different bytes at 1M accounts.
DATA_PAGE_BYTES = 1 << 30


class IntegrityError(C360Error):
    """A stored output's bytes differ from the hash its stage manifest recorded."""

    code = "ARTIFACT_CORRUPT"


class StageWriter:
    """Collects one generation's files in a staging folder; `write_stage` switches it live.

    Its files are not synced to disk one by one: the commit syncs them all at once before the
    generation goes live (`sync_paths`), which is what a power cut needs and a killed process
    does not (the kernel keeps what was written)."""

    def __init__(self, stage: str, staging: Path) -> None:
        self.stage = stage
        self.staging = staging
        self.hashes: dict[str, str] = {}
        self.manifest_hash = ""  # set once the generation is live

    def write(self, path: str, writer: Callable[[Path], str]) -> str:
        """Let `writer(file)` write the file at public `path` and return its hash; record it."""
        if path in self.hashes or path == MANIFEST or Path(path).is_absolute() or ".." in Path(path).parts:
            raise ValueError(f"stage {self.stage}: {path!r} is not a new relative path")
        digest = writer(self.staging / path)
        self.hashes[path] = digest
        return digest

    def write_bytes(self, path: str, data: bytes) -> str:
        return self.write(path, lambda file: write_bytes_atomic(file, data, sync=False))

    def write_text(self, path: str, text: str) -> str:
        return self.write(path, lambda file: write_text_atomic(file, text, sync=False))

    def write_json(self, path: str, value: dict | list) -> str:
        return self.write(path, lambda file: write_json_atomic(file, value, sync=False))

    def write_chunks(self, path: str, chunks: Iterator[bytes]) -> str:
        return self.write(path, lambda file: write_chunks_atomic(file, chunks, sync=False))

    def write_frame(self, path: str, frame: pl.DataFrame) -> str:
        """A frame as Parquet, in row groups with statistics (per-account reads skip the rest)."""

        def parquet(file: Path) -> str:
            with atomic_writer(file, "wb", sync=False) as handle:
                frame.write_parquet(
                    handle, statistics=True, row_group_size=ROW_GROUP_ROWS, data_page_size=DATA_PAGE_BYTES
                )
            return sha256_file(file)

        return self.write(path, parquet)

    def write_lazy_frame(self, path: str, frame: pl.LazyFrame) -> str:
        """A lazy frame as Parquet, streamed (never whole in memory), in `write_frame`'s row groups:
        the same bytes as `write_frame` of the frame read back from Parquet."""

        def parquet(file: Path) -> str:
            with atomic_writer(file, "wb", sync=False) as handle:
                frame.sink_parquet(
                    handle, statistics=True, row_group_size=ROW_GROUP_ROWS, data_page_size=DATA_PAGE_BYTES
                )
            return sha256_file(file)

        return self.write(path, parquet)

    def written(self, path: str) -> Path:
        """A file this generation wrote, to read back before it goes live (this writer made it)."""
        if path not in self.hashes:
            raise ValueError(f"stage {self.stage}: {path!r} was not written")
        return self.staging / path


@contextmanager
def write_stage(root: Path, stage: str, shard: str | None = None) -> Iterator[StageWriter]:
    """Write the next generation of `stage` under `root`; switch it live if the block succeeds.

    The caller holds the write lock of `shard` (None: the project's), and every write of this
    stage happens under that one lock; that is what makes removing a staging folder of that
    lock's other (dead) processes, or an unswitched generation of this stage, safe.
    """
    with write_stages(root, shard) as batch:
        yield batch.stage(stage)


class StageBatch:
    """Several stages written under one lock and committed together (`write_stages`)."""

    def __init__(self, root: Path, shard: str | None) -> None:
        self.root = root
        self.shard = shard
        self.writers: dict[str, StageWriter] = {}

    def stage(self, stage: str) -> StageWriter:
        """A writer of the next generation of `stage`, which goes live with the batch's others."""
        if stage in self.writers:
            raise ValueError(f"stage {stage} is already in this batch")
        staging = _staging_root(self.root, self.shard) / f"{stage.replace('/', '~')}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _prune(self.root / STAGES / stage)
        self.writers[stage] = writer = StageWriter(stage, staging)
        return writer


@contextmanager
def write_stages(root: Path, shard: str | None = None) -> Iterator[StageBatch]:
    """Write the next generations of several stages (`batch.stage(name)` each) under `root`;
    if the block succeeds, switch them live together, else none.

    One commit for all: every file of every generation is synced to disk in one concurrent pass
    before the first goes live, and each step of the switch is synced once for all the stages,
    so a batch of 200 accounts' QBR packs waits for a few journal commits per step instead of
    about ten per pack. Each stage still switches in one atomic step, so a process killed
    part-way leaves each stage old or new. The locking is `write_stage`'s.
    """
    batch = StageBatch(Path(root), shard)
    try:
        yield batch
        _commit(batch.root, list(batch.writers.values()))
    finally:
        for writer in batch.writers.values():
            shutil.rmtree(writer.staging, ignore_errors=True)


def sweep_staging(root: Path, shard: str | None = None) -> None:
    """Remove what dead writers left in the staging folder of `shard`'s lock (called under that lock).

    The project lock's sweep leaves the shards' staging folders alone: their writers hold other locks.
    """
    mine = f".{os.getpid()}"
    try:
        entries = list(os.scandir(_staging_root(Path(root), shard)))
    except FileNotFoundError:
        return
    for entry in entries:
        if not entry.name.endswith(mine) and not (shard is None and entry.name == SHARD_STAGING):
            _remove(Path(entry.path))


def _commit(root: Path, writers: list[StageWriter]) -> None:
    """Switch each writer's generation live: its files, manifest and folders on disk first, then
    the generation's folder in place, then its `live` link; each step synced for all at once."""
    manifest_hashes = {
        writer.stage: write_text_atomic(
            writer.staging / MANIFEST,
            canonical_json({"files": dict(sorted(writer.hashes.items())), "stage": writer.stage}, indent=2),
            sync=False,
        )
        for writer in writers
    }
    sync_paths(
        [writer.staging / path for writer in writers for path in [*writer.hashes, MANIFEST]]
        + [Path(folder) for writer in writers for folder, _, _ in os.walk(writer.staging)]
    )
    old_files, switching = {}, []
    for writer in writers:
        stage_dir = root / STAGES / writer.stage
        generation = GENERATION_PREFIX + manifest_hashes[writer.stage].removeprefix("sha256:")[:16]
        previous = _live_generation(stage_dir / LIVE)
        old_files[writer.stage] = _manifest_files(stage_dir / previous) if previous else {}
        if previous != generation:
            stage_dir.mkdir(parents=True, exist_ok=True)
            os.replace(writer.staging, stage_dir / generation)
            switching.append((writer, generation))
    switched_dirs = [root / STAGES / writer.stage for writer, _ in switching]
    sync_paths(switched_dirs)
    for writer, generation in switching:
        failpoint(f"switch:{writer.stage}")
        _replace_with_link(root / STAGES / writer.stage / LIVE, generation, writer.staging.parent)
    sync_paths(switched_dirs)
    for writer, _ in switching:
        failpoint(f"switched:{writer.stage}")
    for writer in writers:
        _link_public(root, writer.stage, writer.hashes, old_files[writer.stage], writer.staging.parent)
        _prune(root / STAGES / writer.stage)
        writer.manifest_hash = manifest_hashes[writer.stage]


class StageReader:
    """One generation of a stage, resolved once: every read is hashed and checked against it."""

    def __init__(self, root: Path, stage: str) -> None:
        self.stage = stage
        live = Path(root) / STAGES / stage / LIVE
        generation = _live_generation(live)
        if generation is None:
            raise C360Error(f"no {stage} output under {live.parent}", code="STAGE_MISSING")
        self.directory = live.parent / generation
        data = self._bytes(self.directory / MANIFEST)
        self.manifest_hash = sha256_bytes(data)
        if GENERATION_PREFIX + self.manifest_hash.removeprefix("sha256:")[:16] != generation:
            raise IntegrityError(
                f"{self.directory / MANIFEST}: the manifest does not match its generation's name; "
                f"it was changed after it was written. Rebuild the {stage} stage."
            )
        self.files: dict[str, str] = json.loads(data)["files"]

    def read_bytes(self, path: str) -> bytes:
        """The file's bytes, read once and checked against the manifest's hash."""
        if path not in self.files:
            raise C360Error(f"the {self.stage} output {self.directory.name} has no {path}", code="STAGE_MISSING")
        data = self._bytes(self.directory / path)
        digest = sha256_bytes(data)
        if digest != self.files[path]:
            raise IntegrityError(
                f"{self.directory / path}: content hash {digest} differs from {self.files[path]} in "
                f"{self.directory / MANIFEST}; the file was changed after it was written. "
                f"Rebuild the {self.stage} stage."
            )
        return data

    def read_frame(self, path: str, account_ids: list[str] | None = None) -> pl.DataFrame:
        """A verified Parquet file; with `account_ids`, only their rows (row groups skipped by statistics)."""
        frame = pl.scan_parquet(io.BytesIO(self.read_bytes(path)))
        if account_ids is not None:
            frame = frame.filter(pl.col("account_id").is_in(account_ids))
        return frame.collect()

    def read_json(self, path: str):
        return json.loads(self.read_bytes(path))

    def _bytes(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise C360Error(
                f"{path} is gone: another run replaced the {self.stage} output while this one read it; run again",
                code="STAGE_CHANGED",
            ) from None


def open_stage(root: Path, stage: str) -> StageReader:
    return StageReader(root, stage)


def frame_path(stage: str) -> str:
    """Where stage `stage` keeps its frame, inside the stage and under its root."""
    return f"frames/{stage}.parquet"


def shard_root(root: Path, shard: str) -> Path:
    """Shard `shard`'s own stages root under `root`: `<root>/shards/<shard>`, the same layout inside."""
    return Path(root) / SHARD_ROOTS / checked_shard(shard)


def verify_live_stages(root: Path, signed: Mapping[str | None, Mapping[str, str]]) -> int:
    """Read every file of every live generation under `root` and each shard's root, and check it
    against its manifest and against what the signed log recorded.

    `signed` holds, per chain (None for the main log, else the shard key), the latest signed
    hash of each output name (`eventlog.signed_outputs`). A live file whose path is that name, or
    ends with `/<name>`, must have that hash: a generation forged whole (file and manifest
    rewritten, `live` switched to it) or an older one switched back is caught, not only a file
    edited in place. Returns the number of files checked; raises `IntegrityError` (or
    `STAGE_MISSING`) on the first file whose bytes are not the ones recorded.
    """
    shards = [folder for folder in (Path(root) / SHARD_ROOTS).glob("*") if is_shard_key(folder.name)]
    return _verify_live_stages(root, signed.get(None, {})) + sum(
        _verify_live_stages(folder, signed.get(folder.name, {}))
        for folder in sorted(shards, key=lambda folder: int(folder.name))
    )


def _verify_live_stages(root: Path, signed: Mapping[str, str]) -> int:
    stages_dir = Path(root) / STAGES
    checked = 0
    for live in sorted(stages_dir.rglob(LIVE)):
        if not live.is_symlink() or STAGING in live.relative_to(stages_dir).parts:
            continue
        reader = StageReader(root, live.parent.relative_to(stages_dir).as_posix())
        for path in sorted(reader.files):
            reader.read_bytes(path)
            checked += 1
            for name, digest in signed.items():
                if (path == name or path.endswith("/" + name)) and reader.files[path] != digest:
                    raise IntegrityError(
                        f"{reader.directory / path}: content hash {reader.files[path]} is not the {name} "
                        f"the signed log recorded last ({digest}); the output was replaced after it was "
                        f"signed, or a run was killed between publishing it and signing it. "
                        f"Rebuild the {reader.stage} stage."
                    )
    return checked


def _staging_root(root: Path, shard: str | None = None) -> Path:
    staging = root / STAGES / STAGING
    return staging if shard is None else staging / SHARD_STAGING / checked_shard(shard)


def _live_generation(live: Path) -> str | None:
    try:
        return os.readlink(live)
    except FileNotFoundError:
        return None


def _manifest_files(generation: Path) -> dict[str, str]:
    try:
        return json.loads((generation / MANIFEST).read_bytes())["files"]
    except (OSError, ValueError, KeyError):
        return {}  # a damaged old generation: its public links are still replaced below


def _replace_with_link(path: Path, target: str, scratch: Path) -> None:
    """Point `path` at `target` in one step: a new symlink renamed over the old one."""
    temporary = scratch / f"link.{os.getpid()}"
    _remove(temporary)
    os.symlink(target, temporary)
    os.replace(temporary, path)


def _link_public(root: Path, stage: str, files: dict[str, str], old_files: dict[str, str], scratch: Path) -> None:
    """Each file's public path links into the live generation; paths the stage no longer makes go."""
    live = root / STAGES / stage / LIVE
    for path in sorted(files):
        public = root / path
        target = os.path.relpath(live / path, public.parent)
        try:
            current: str | None = os.readlink(public)
        except FileNotFoundError:
            current = None
        except OSError:  # there, but not a link
            current = ""
        if current == target:
            continue
        public.parent.mkdir(parents=True, exist_ok=True)
        if current is None:
            # Nothing there: the link is made in place, which is one atomic step already.
            with contextlib.suppress(FileExistsError):
                os.symlink(target, public)
                continue
        _replace_with_link(public, target, scratch)
    for path in sorted(old_files.keys() - files.keys()):
        if (root / path).is_symlink():
            (root / path).unlink()


def _prune(stage_dir: Path) -> None:
    """Remove every generation but the live one (old ones, and any a dead run never switched to)."""
    try:
        entries = list(os.scandir(stage_dir))
    except FileNotFoundError:
        return
    keep = {LIVE, _live_generation(stage_dir / LIVE)}
    for entry in entries:
        if entry.name not in keep:
            _remove(Path(entry.path))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
