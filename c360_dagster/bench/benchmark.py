"""`c360:bench`: time the chain and a sample of QBR packs on a generated data set, against a floor.

Timings are what a benchmark outputs, not pipeline results, so this module (alone) reads the
wall clock. Every stage runs in this process, so one sampler thread sees them all: it records
(wall time, process CPU seconds, RSS) every `SAMPLE_INTERVAL_S`, and each Dagster step's
start and end (from the run's event log) pick out that step's CPU and peak RSS.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import importlib.util
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil
import yaml

from c360_dagster.defs.lake import lake_key
from c360_dagster.domain.core.io import write_json_atomic
from c360_dagster.domain.scoring.account_state import LIVE_STATES
from c360_dagster.runner import CPUS, ProjectPaths, account_batches, run_batches, run_chain, run_job

SAMPLE_INTERVAL_S = 0.02
MARKER = "dataset.json"  # written last by a complete generation
MIB = 1 << 20
# (stage, job, its main asset's step key, its lake table)
CHAIN = (
    ("load", "c360_load", "customer_360", "crm_opps"),
    ("health", "c360_health", "account_health", "account_health"),
    ("signals", "c360_signals", "customer_signals", "customer_signals"),
    ("renewals", "c360_renewals", "renewal_forecasts", "renewal_forecasts"),
)
# The README's console sequence, each command in its own process as a user runs it.
CONSOLE = (
    ("load", ("c360:load",)),
    ("health", ("c360:health",)),
    ("signals", ("c360:signals",)),
    ("renewals", ("c360:renewals", "--window-days", "120")),
)
ROWS_OF = {
    "split": "input rows (validated, split into shards)",
    "load": "input rows",
    "health": "accounts",
    "signals": "accounts",
    "renewals": "subscriptions",
    "lake": "lake rows written",
    "rollups": "accounts (the book's documents and frames from the shards')",
    "qbr": "accounts (range backfill, batched runs)",
    "qbr_red": "red accounts (scattered backfill, batched runs)",
    "chain": "accounts",
    "floor": "accounts",
    "output_floor": "records written (each as JSON and Parquet)",
}
RSS_METHOD = (
    f"RSS of the process and its worker processes, summed, sampled every {int(SAMPLE_INTERVAL_S * 1000)} ms "
    "by a sampler thread (includes the Python and Dagster baseline)"
)
SHARDS_METHOD = (
    "each configuration runs `runner.run_chain('c360_chain')` in a fresh process of its own (the chain process): "
    "1 shard is one in-process run; N shards are the split run in the chain process, then the N shard runs, each "
    "in a run process (up to `workers` at a time) that runs its steps on Dagster's multiprocess executor (each step "
    "in a step process, forked from a forkserver), then the roll-up run in the chain process; RSS is sampled per "
    "process and its peak reported per kind (chain, run, step; helper: forkservers and resource trackers); a step "
    "process's RSS counts the pages it shares with its forkserver (Python, Dagster, the asset graph); the roll-ups' "
    "public documents and frames (artifacts/customer/ but stages/, shards/, inputs/) are hashed"
)
# The kinds of process of a shard bench configuration, as the report names them.
PROCESS_KINDS = ("chain", "run", "step", "helper")
# Folders of artifacts/customer holding the shards' own outputs and stage generations; every
# other file is a roll-up document or frame, the same bytes for any N.
SHARD_ONLY = ("stages", "shards", "inputs")
SPLIT_STEP = "customer_inputs"
ROLLUP_STEP_PREFIX = "report__"  # the roll-ups' step keys (defs/customer.report_key)
CPU_METHOD = (
    "CPU seconds of the process (all threads) and its worker processes, interpolated between samples at step boundaries"
)


@dataclass(frozen=True)
class BenchSettings:
    """What to benchmark and where: the data set's parameters and the project folders."""

    accounts: int
    weeks: int = 13
    seed: int = 0
    qbr_sample: int = 1000
    red_sample: int = 400
    workers: int = CPUS
    artifacts_dir: Path = Path("artifacts")
    configs_dir: str = "configs/customer"
    contracts_dir: str = "contracts/schemas"

    @property
    def bench_dir(self) -> Path:
        return Path(self.artifacts_dir) / "bench"

    @property
    def data_dir(self) -> Path:
        return self.bench_dir / "data" / f"{self.accounts}_{self.weeks}_{self.seed}"

    @property
    def work_dir(self) -> Path:
        return self.bench_dir / f"work_{self.accounts}"


def _ratio(numerator_s: float, denominator_s: float) -> float:
    """A ratio of two times as the report prints them (3 decimals), so a reader recomputes the same figure."""
    return round(round(numerator_s, 3) / round(denominator_s, 3), 2)


@dataclass(frozen=True)
class Figures:
    """One stage's measurement."""

    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    rows: int

    def to_dict(self, rows_of: str) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "peak_rss_mb": round(self.peak_rss_bytes / MIB, 1),
            "rows": self.rows,
            "rows_of": rows_of,
            "rows_per_s": round(self.rows / self.wall_s, 1) if self.wall_s > 0 else None,
        }


class ResourceSampler:
    """A daemon thread sampling (wall time, CPU seconds, RSS bytes) of this process and its children.

    Children are the worker processes of concurrent runs: their RSS adds to this process's,
    and their CPU counts while they live and, once reaped, through `os.times()`.
    """

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._process = psutil.Process()
        self._descendants = _Descendants(self._process.pid)
        self._descendants_lock = threading.Lock()  # mark() runs in the sampler thread and the bench's
        self._samples: list[tuple[float, float, int]] = []
        self._process_samples: list[tuple[float, int, int]] = []  # (wall time, pid, RSS)
        self._commands: dict[int, str] = {}  # pid -> command line, when first seen
        self._parents: dict[int, int] = {}  # pid -> parent pid, when first seen
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="c360-bench-sampler", daemon=True)

    def __enter__(self) -> ResourceSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mark(self) -> float:
        """Take a sample now; return its wall time."""
        # Wall time on purpose: samples are matched to Dagster's event timestamps (epoch
        # seconds). Benchmark figures are the one output allowed to depend on the clock.
        now, cpu, rss = time.time(), time.process_time(), self._process.memory_info().rss
        per_process = [(now, self._process.pid, rss)]
        reaped = os.times()
        commands: dict[int, str] = {}
        parents: dict[int, int] = {}
        cpu += reaped.children_user + reaped.children_system
        with self._descendants_lock:
            descendants = self._descendants.read()
        for pid, (child_cpu, child_rss, parent) in descendants.items():
            if pid not in self._commands:
                commands[pid], parents[pid] = _command_line(pid), parent
            cpu, rss = cpu + child_cpu, rss + child_rss
            per_process.append((now, pid, child_rss))
        with self._lock:
            self._samples.append((now, cpu, rss))
            self._process_samples += per_process
            self._commands.update(commands)
            self._parents.update(parents)
        return now

    def process_peaks(self, start: float, end: float) -> dict[int, int]:
        """Each process's peak RSS between two wall times, by pid (this process's included)."""
        peaks: dict[int, int] = {}
        with self._lock:
            for when, pid, rss in self._process_samples:
                if start <= when <= end:
                    peaks[pid] = max(rss, peaks.get(pid, 0))
        return peaks

    def process_kind(self, pid: int, chain_pid: int, step_pids: Collection[int]) -> str:
        """What a process of a chain's tree is: the chain process, a step process (Dagster logs each
        one's pid as it starts, which a sample of the process tree can miss), a helper (a forkserver
        or a resource tracker) or a run process (a worker the chain started). A process forked from a
        forkserver (a shard run's worker) carries the server's command line: it is told from the server
        by its parent's, which is the same."""
        if pid == chain_pid:
            return "chain"
        if pid in step_pids:
            return "step"
        with self._lock:
            command = self._commands.get(pid, "")
            forked = command == self._commands.get(self._parents.get(pid, -1))
        if ("forkserver" in command or "resource_tracker" in command) and not forked:
            return "helper"
        return "run"

    def children_peak_total(self, start: float, end: float) -> int:
        """The peak, over samples between two wall times, of the RSS summed over this process's children."""
        totals: dict[float, int] = {}
        with self._lock:
            for when, pid, rss in self._process_samples:
                if start <= when <= end and pid != self._process.pid:
                    totals[when] = totals.get(when, 0) + rss
        return max(totals.values(), default=0)

    def figures(self, start: float, end: float, rows: int) -> Figures:
        """The CPU seconds and peak RSS between two wall times (as marked or logged by Dagster)."""
        with self._lock:
            samples = sorted(self._samples)
        times = np.array([s[0] for s in samples])
        cpu = np.array([s[1] for s in samples])
        rss = np.array([s[2] for s in samples])
        inside = rss[(times >= start) & (times <= end)]
        # A step shorter than one interval holds no sample: the nearest one stands in.
        peak = int(inside.max()) if inside.size else int(rss[np.abs(times - (start + end) / 2).argmin()])
        cpu_s = float(np.interp(end, times, cpu) - np.interp(start, times, cpu))
        return Figures(end - start, cpu_s, peak, rows)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.mark()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class _Descendants:
    """(CPU seconds, RSS bytes) of every live descendant of process `root`, by pid, read from /proc
    as psutil reads them (a process's parent and CPU from its stat, its RSS from its statm); a
    process's CPU counts its children that ended, so a worker forked from a server and gone is
    still counted, in its server.

    psutil's `children(recursive=True)` reads the stat of every process on the machine each time:
    at a sample every 20 ms, with ~100 processes, the sampler took 5-6 CPU-ms a sample, half the
    bench process's own CPU at load 20 (docs/performance.md, "The test suite's wall time"). Here
    only the processes not seen before and the descendants are read: a process that was not a
    descendant when first read never becomes one (a parent that exits hands its children to
    init, never to another process), so it is not read again while its pid is listed.
    """

    def __init__(self, root: int) -> None:
        self._root = root
        self._others: set[int] = set()  # listed pids known not to be descendants

    def read(self) -> dict[int, tuple[float, int, int]]:
        """(CPU seconds, RSS bytes, parent pid) of each live descendant, by pid."""
        listed = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        self._others &= listed  # a pid listed again after it was free is read afresh
        parents: dict[int, list[int]] = {}
        cpu_s: dict[int, float] = {}
        for pid in listed - self._others:
            try:  # a process may exit while it is read
                stat = _proc_file(f"/proc/{pid}/stat")
            except OSError:
                continue
            # After the command's closing parenthesis: state, ppid, ..., utime (12th), stime (13th),
            # and cutime, cstime: the CPU of its children that ended, which a worker server's
            # forked workers hand to it, not to this process.
            fields = stat[stat.rfind(b")") + 2 :].split()
            parents.setdefault(int(fields[1]), []).append(pid)
            cpu_s[pid] = sum(int(field) for field in fields[11:15]) / CLOCK_TICKS
        found: dict[int, tuple[float, int, int]] = {}
        unvisited = [self._root]
        while unvisited:
            parent = unvisited.pop()
            for child in parents.get(parent, ()):
                unvisited.append(child)
                with contextlib.suppress(OSError):
                    rss = int(_proc_file(f"/proc/{child}/statm").split()[1]) * PAGE_BYTES
                    found[child] = (cpu_s[child], rss, parent)
        self._others |= cpu_s.keys() - found.keys() - {self._root}
        return found


def _proc_file(path: str) -> bytes:
    """A small /proc file's bytes, without a file object's cost (the sampler reads hundreds a sample)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return os.read(descriptor, 1 << 16)
    finally:
        os.close(descriptor)


def _command_line(pid: int) -> str:
    """A process's command line, its arguments joined by spaces ("" once it has exited)."""
    try:
        return _proc_file(f"/proc/{pid}/cmdline").rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class _JobRun:
    """One job's wall window and its steps' windows (step key -> (start, end))."""

    name: str
    start: float
    end: float
    steps: dict[str, tuple[float, float]]


def run_bench(settings: BenchSettings, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Generate (or reuse) the data set, time floor, chain and QBR sample; write bench_<N>.json."""
    dataset, generate_s = ensure_dataset(settings, log)
    work = settings.work_dir
    if work.exists():
        shutil.rmtree(work)
    paths = ProjectPaths(
        fixtures_dir=str(settings.data_dir),
        configs_dir=settings.configs_dir,
        contracts_dir=settings.contracts_dir,
        artifacts_dir=str(work / "artifacts"),
    )
    customer = paths.customer_dir
    # Importing the asset graph (about a second) is a fixed start-up cost, not the load stage's.
    import c360_dagster.definitions  # noqa: F401

    with _dagster_home(work / "dagster_home"), ResourceSampler() as sampler:
        floor, output_floor, output_records = _time_floors(settings, dataset, sampler, log)
        jobs = [_time_job(job, paths, sampler, log) for _, job, _, _ in CHAIN]
        counts = json.loads((customer / "frames" / "360" / "manifest.json").read_text(encoding="utf-8"))["counts"]
        lake_rows = _lake_rows(customer / "frames", counts)
        stage_rows = {
            "load": sum(counts.values()),
            "health": counts["accounts"],
            "signals": counts["accounts"],
            "renewals": counts["subs"],
        }
        # The split and the roll-ups are steps of their own: the table's rows add up to the chain
        # (but Dagster's orchestration between steps, in `jobs[*].orchestration_s`).
        stages = {"split": sampler.figures(*jobs[0].steps[SPLIT_STEP], stage_rows["load"])}
        stages.update(
            (stage, sampler.figures(*run.steps[step], stage_rows[stage]))
            for (stage, _, step, _), run in zip(CHAIN, jobs, strict=True)
        )
        stages["lake"] = _sum_figures(
            [
                sampler.figures(*run.steps[lake_key(table).to_python_identifier()], 0)
                for (_, _, _, table), run in zip(CHAIN, jobs, strict=True)
            ],
            rows=sum(lake_rows.values()),
        )
        stages["rollups"] = _sum_figures(
            [
                sampler.figures(*window, 0)
                for run in jobs
                for key, window in run.steps.items()
                if key.startswith(ROLLUP_STEP_PREFIX)
            ],
            rows=counts["accounts"],
        )
        chain = sampler.figures(jobs[0].start, jobs[-1].end, counts["accounts"])
        # The JSON artifacts the chain wrote: bytes the floor never writes (docs/performance.md).
        json_bytes = {path.name: path.stat().st_size for path in sorted(customer.glob("*.json"))}
        sample, red = qbr_samples(customer / "frames" / "health.parquet", settings.qbr_sample, settings.red_sample)
        qbr_start = sampler.mark()
        batches = account_batches(sample, settings.workers)
        log(
            f"bench: playbooks and QBR packs for {len(sample)} accounts: {len(batches)} runs, {settings.workers} at a time"
        )
        _run_account_batches(paths, batches, settings.workers)
        stages["qbr"] = sampler.figures(qbr_start, sampler.mark(), len(sample))
        red_start = sampler.mark()
        red_batches = account_batches(red, settings.workers)
        log(f"bench: playbooks and QBR packs for {len(red)} red accounts, not adjacent: {len(red_batches)} runs")
        _run_account_batches(paths, red_batches, settings.workers)
        stages["qbr_red"] = sampler.figures(red_start, sampler.mark(), len(red))
        console = _time_console(settings, stage_rows, sampler, log)
    scoring_s = sum(job.end - job.start for job in jobs[:2])
    report = {
        **_report_head(settings, dataset),
        "method": {
            "rss": RSS_METHOD,
            "cpu": CPU_METHOD,
            "floor": "bench/floor.py: one DuckDB SQL pass over the input files",
            "output_floor": "bench/floor.py: the same pass also writing the 360 rows, a health and a signal record per "
            "account and the renewals with DuckDB's JSON and Parquet writers, and the lake tables",
            "console": "the README's four commands, each a `python -m c360_dagster.console` process on a project of its own; "
            "`console.bytecode`: c360's modules without cached bytecode, which each command compiles when "
            "PYTHONDONTWRITEBYTECODE is set",
        },
        "data": {
            "dir": str(settings.data_dir),
            "generated_s": None if generate_s is None else round(generate_s, 3),
            "counts": dataset["counts"],
            "bytes": sum(dataset["sizes"].values()),
        },
        "stages": {
            name: stages[name].to_dict(ROWS_OF[name])
            for name in ("split", "load", "health", "signals", "renewals", "lake", "rollups", "qbr", "qbr_red")
        },
        "chain": chain.to_dict(ROWS_OF["chain"]),
        "jobs": {job.name: _job_report(job, sampler) for job in jobs},
        "lake_rows": lake_rows,
        "json_bytes": json_bytes,
        "floor": floor.to_dict(ROWS_OF["floor"]),
        "output_floor": {**output_floor.to_dict(ROWS_OF["output_floor"]), **output_records},
        "console": console,
        "ratio": {
            "scoring": _ratio(scoring_s, floor.wall_s),
            "chain": _ratio(chain.wall_s, floor.wall_s),
            "chain_to_output_floor": _ratio(chain.wall_s, output_floor.wall_s),
            "console_to_chain": _ratio(console["wall_s"], chain.wall_s),
        },
        "qbr_accounts": sample,
        "qbr_red_accounts": red,
    }
    report["targets"] = targets(report)
    out = settings.bench_dir / f"bench_{settings.accounts}.json"
    write_json_atomic(out, report)
    return {**report, "out": str(out)}


def run_shard_bench(
    settings: BenchSettings, counts: Sequence[int], log: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """Run the chain once per shard count in `counts`, each in a fresh process; time it, its split
    step and its roll-ups, take each process's peak RSS, hash the roll-ups; write bench_<N>_shards.json."""
    dataset, generate_s = ensure_dataset(settings, log)
    configurations: list[dict[str, Any]] = []
    with ResourceSampler() as sampler:
        for count in counts:
            root = settings.work_dir / f"shards_{count}"
            if root.exists():
                shutil.rmtree(root)
            paths = ProjectPaths(
                fixtures_dir=str(settings.data_dir),
                configs_dir=str(_configs_with_shards(Path(settings.configs_dir), root / "configs", count)),
                contracts_dir=settings.contracts_dir,
                artifacts_dir=str(root / "artifacts"),
            )
            home = (root / "dagster_home").resolve()
            gc.collect()
            start = sampler.mark()
            chain = multiprocessing.get_context("spawn").Process(
                target=_run_chain_in, args=(paths, str(home), settings.workers), name=f"c360-bench-shards-{count}"
            )
            chain.start()
            chain_pid = chain.pid
            assert chain_pid is not None  # set by start()
            chain.join()
            end = sampler.mark()
            if chain.exitcode != 0:
                raise RuntimeError(f"the chain with {count} shards failed (exit code {chain.exitcode})")
            with _dagster_home(home):
                steps = _all_step_windows()
                step_processes = _step_processes()
            peaks = sampler.process_peaks(start, end)
            peaks.pop(os.getpid(), None)  # the bench itself only waits
            kind_peaks = dict.fromkeys(PROCESS_KINDS, 0)
            for pid, peak in peaks.items():
                kind = sampler.process_kind(pid, chain_pid, step_processes)
                kind_peaks[kind] = max(kind_peaks[kind], peak)
            step_peaks: dict[str, int] = {}
            for pid, key in step_processes.items():
                step_peaks[key] = max(step_peaks.get(key, 0), peaks.get(pid, 0))
            split = [window for key, window in steps if key == SPLIT_STEP]
            rollups = [window for key, window in steps if key.startswith(ROLLUP_STEP_PREFIX)]
            documents = _rollup_hashes(paths.customer_dir)
            configuration: dict[str, Any] = {
                "shards": count,
                "processes": "one, in-process"
                if count == 1
                else f"split and roll-ups in the chain process; shards in {min(settings.workers, count)} run processes "
                f"at a time, each step in a step process (multiprocess executor)",
                "wall_s": round(end - start, 3),
                "split_s": round(sum(b - a for a, b in split), 3),
                "rollups_s": round(sum(b - a for a, b in rollups), 3),
                "peak_rss_mb": {
                    "largest_process": round(max(peaks.values()) / MIB, 1),
                    **{f"{kind}_process": round(peak / MIB, 1) for kind, peak in kind_peaks.items()},
                    "sum": round(sampler.children_peak_total(start, end) / MIB, 1),
                },
                # Which step's process peaks, over the shards (the multiprocess executor's steps).
                "step_process_peak_mb": {key: round(peak / MIB, 1) for key, peak in sorted(step_peaks.items())},
                # Which part of the chain's process peaks: the split or the roll-ups (whole-book steps).
                "chain_process_peak_mb": {
                    part: round(
                        max((sampler.process_peaks(a, b).get(chain_pid, 0) for a, b in windows), default=0) / MIB, 1
                    )
                    for part, windows in (("split", split), ("rollups", rollups))
                },
                "rollup_sha256": hashlib.sha256(json.dumps(documents, sort_keys=True).encode()).hexdigest(),
                "rollup_files": documents,
            }
            configurations.append(configuration)
            log(
                f"bench: {count} shard(s) {configuration['wall_s']:.2f} s (split {configuration['split_s']:.2f} s), "
                f"largest process {configuration['peak_rss_mb']['largest_process']} MB"
            )
    first = configurations[0]["rollup_files"]
    report = {
        **_report_head(settings, dataset),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "method": {
            "shards": SHARDS_METHOD,
            "rss": f"RSS of each process sampled every {int(SAMPLE_INTERVAL_S * 1000)} ms",
        },
        "data": {
            "dir": str(settings.data_dir),
            "generated_s": None if generate_s is None else round(generate_s, 3),
            "counts": dataset["counts"],
        },
        "configurations": configurations,
        "rollups_identical": all(c["rollup_files"] == first for c in configurations),
        "rollups_differing": sorted(
            {name for c in configurations for name in c["rollup_files"].keys() ^ first.keys()}
            | {name for c in configurations for name in first if c["rollup_files"].get(name) != first[name]}
        ),
    }
    out = settings.bench_dir / f"bench_{settings.accounts}_shards.json"
    write_json_atomic(out, report)
    return {**report, "out": str(out)}


def render_shard_bench(report: dict[str, Any]) -> str:
    """The shard bench report as a table."""
    lines = [
        f"c360 bench, shards: {report['accounts']} accounts x {report['weeks']} weeks (seed {report['seed']}, "
        f"as_of {report['as_of']}), {report['machine']['nproc']} cores, {report['machine']['memory_gb']} GB, "
        f"load average {' '.join(str(load) for load in report['load_average'])}",
        f"{'shards':>6} {'wall s':>9} {'split s':>8} {'roll-ups s':>10} {'largest MB':>11} {'chain MB':>9} "
        f"{'run MB':>7} {'step MB':>8} {'sum MB':>8}  roll-up sha256",
    ]
    for c in report["configurations"]:
        rss = c["peak_rss_mb"]
        lines.append(
            f"{c['shards']:>6} {c['wall_s']:>9.2f} {c['split_s']:>8.2f} {c['rollups_s']:>10.2f} "
            f"{rss['largest_process']:>11.1f} {rss['chain_process']:>9.1f} {rss['run_process']:>7.1f} "
            f"{rss['step_process']:>8.1f} {rss['sum']:>8.1f}  {c['rollup_sha256'][:16]}"
        )
    if report["rollups_identical"]:
        lines.append(f"roll-ups: byte-identical across N ({len(report['configurations'][0]['rollup_files'])} files)")
    else:
        lines.append(f"roll-ups: DIFFER across N: {', '.join(report['rollups_differing'])}")
    lines.append(f"written: {report['out']}")
    return "\n".join(lines) + "\n"


def _configs_with_shards(configs: Path, into: Path, count: int) -> Path:
    """A copy of the configs folder whose scale.yaml says `shards: count` (its other keys kept)."""
    shutil.copytree(configs, into)
    scale = into / "scale.yaml"
    settings = (yaml.safe_load(scale.read_text(encoding="utf-8")) or {}) if scale.exists() else {}
    scale.write_text(yaml.safe_dump({**settings, "shards": count}, sort_keys=True), encoding="utf-8")
    return into


def _run_chain_in(paths: ProjectPaths, home: str, workers: int) -> None:
    """One configuration's chain, in a fresh process on a Dagster home of its own."""
    os.environ["DAGSTER_HOME"] = home
    run_chain("c360_chain", paths, progress=False, workers=workers, executor="multiprocess")


def _all_step_windows() -> list[tuple[str, tuple[float, float]]]:
    """(step key, (start, end)) of every step of every run on the instance."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        run_ids = sorted(run.run_id for run in instance.get_runs())
    return [(key, window) for run_id in run_ids for key, window in sorted(_step_windows(run_id).items())]


def _step_processes() -> dict[int, str]:
    """The step each step process ran, by pid: the multiprocess executor logs it as the process starts."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        run_ids = sorted(run.run_id for run in instance.get_runs())
        records: list[Any] = [  # their event's data is a union of every event kind's
            record
            for run_id in run_ids
            for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED)
        ]
    return {int(record.dagster_event.event_specific_data.metadata["pid"].value): record.step_key for record in records}


def _rollup_hashes(customer: Path) -> dict[str, str]:
    """sha256 of each roll-up document and frame, by its path under artifacts/customer."""
    return {
        path.relative_to(customer).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(customer.rglob("*"))
        if path.is_file() and path.relative_to(customer).parts[0] not in SHARD_ONLY
    }


def _run_account_batches(paths: ProjectPaths, batches: list[list[str]], workers: int) -> None:
    failed = run_batches("c360_account", paths, batches, workers=workers)
    if failed:
        raise RuntimeError(f"QBR batches failed: {failed}")


def ensure_dataset(settings: BenchSettings, log: Callable[[str], None]) -> tuple[dict[str, Any], float | None]:
    """The cached data set's description; generate it first unless a complete one is there."""
    from c360_dagster.bench.generator import generate_dataset

    folder = settings.data_dir
    marker = folder / MARKER
    if marker.exists():
        dataset = json.loads(marker.read_text(encoding="utf-8"))
        if all(
            (folder / name).is_file() and (folder / name).stat().st_size == size
            for name, size in dataset["sizes"].items()
        ):
            log(f"bench: reusing the data set in {folder}")
            return dataset, None
    if folder.exists():
        shutil.rmtree(folder)
    log(f"bench: generating {settings.accounts} accounts x {settings.weeks} weeks into {folder}")
    started = time.perf_counter()
    summary = generate_dataset(folder, settings.accounts, seed=settings.seed, weeks=settings.weeks)
    took = time.perf_counter() - started
    dataset = {**summary.to_dict(), "sizes": {name: (folder / name).stat().st_size for name in summary.files.values()}}
    write_json_atomic(marker, dataset)
    return dataset, took


def qbr_samples(health_frame: Path, size: int, red_size: int) -> tuple[list[str], list[str]]:
    """The first `size` live accounts by id (a range backfill) and the first `red_size` red ones by id
    (a backfill of accounts that are not adjacent).

    Churned and not-started accounts get no playbook or pack (their gate refuses them), so they
    are left out of the sample, as `c360:run` leaves them out.
    """
    tiers = (
        pl.read_parquet(health_frame, columns=["account_id", "tier", "lifecycle"])
        .filter(pl.col("lifecycle").is_in(list(LIVE_STATES)))
        .sort("account_id")
    )
    red = tiers.filter(pl.col("tier") == "red")["account_id"].head(red_size).to_list()
    return tiers["account_id"].head(size).to_list(), red


def targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets, each with its measured value and whether it is met."""
    gib = 1 << 30
    found = {
        "chain_within_3x_output_floor": {
            "target": "chain wall <= 3x output floor",
            "measured": report["ratio"]["chain_to_output_floor"],
        },
        "peak_rss_under_6gb": {
            "target": "chain peak RSS < 6 GiB",
            "measured": round(report["chain"]["peak_rss_mb"] * MIB / gib, 2),
        },
        "qbr_10_per_s": {"target": ">= 10 QBR packs/s", "measured": report["stages"]["qbr"]["rows_per_s"]},
        "qbr_scattered_10_per_s": {
            "target": ">= 10 QBR packs/s, red accounts (not adjacent)",
            "measured": report["stages"]["qbr_red"]["rows_per_s"],
        },
    }
    found["chain_within_3x_output_floor"]["met"] = report["ratio"]["chain_to_output_floor"] <= 3
    found["peak_rss_under_6gb"]["met"] = found["peak_rss_under_6gb"]["measured"] < 6
    for name in ("qbr_10_per_s", "qbr_scattered_10_per_s"):
        found[name]["met"] = (found[name]["measured"] or 0) >= 10
    overhead = report["console"]["max_overhead_s"]
    found["console_overhead_2s"] = {
        "target": "each console command's time beyond its steps <= 2 s",
        "measured": overhead,
        "met": overhead <= 2,
    }
    if report["accounts"] <= 100_000:
        wall = report["chain"]["wall_s"]
        found["chain_under_20s"] = {"target": "chain wall < 20 s (100k accounts)", "measured": wall, "met": wall < 20}
        console = report["console"]["wall_s"]
        found["console_under_20s"] = {
            "target": "the four console commands <= 20 s (100k accounts)",
            "measured": console,
            "met": console <= 20,
        }
    else:
        ratio = report["ratio"]["console_to_chain"]
        found["console_within_1_2x_chain"] = {
            "target": "the four console commands <= 1.2x the chain",
            "measured": ratio,
            "met": ratio <= 1.2,
        }
    return found


def _report_head(settings: BenchSettings, dataset: dict[str, Any]) -> dict[str, Any]:
    """What every bench report opens with: the data set it measured and the machine."""
    return {
        "ok": True,
        "accounts": settings.accounts,
        "weeks": settings.weeks,
        "seed": settings.seed,
        "as_of": dataset["as_of"],
        "machine": machine(),
    }


def machine() -> dict[str, Any]:
    """The machine the figures were taken on."""
    import dagster
    import duckdb

    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    return {
        "nproc": CPUS,
        "memory_gb": round(psutil.virtual_memory().total / (1 << 30), 1),
        "cpu_model": model,
        "python": platform.python_version(),
        "polars": pl.__version__,
        "duckdb": duckdb.__version__,
        "dagster": dagster.__version__,
    }


def render_bench(report: dict[str, Any]) -> str:
    """The bench report as a table."""
    lines = [
        f"c360 bench: {report['accounts']} accounts x {report['weeks']} weeks (seed {report['seed']}, as_of {report['as_of']}), "
        f"{report['machine']['nproc']} cores, {report['machine']['memory_gb']} GB",
        f"data: {report['data']['dir']} ({'generated in ' + str(report['data']['generated_s']) + ' s' if report['data']['generated_s'] is not None else 'reused'})",
        f"{'stage':<10} {'wall s':>9} {'cpu s':>9} {'peak RSS MB':>12} {'rows':>11} {'rows/s':>12}  rows of",
    ]
    rows = [
        *report["stages"].items(),
        ("chain", report["chain"]),
        ("floor", report["floor"]),
        ("out floor", report["output_floor"]),
    ]
    for name, figures in rows:
        lines.append(
            f"{name:<10} {figures['wall_s']:>9.2f} {figures['cpu_s']:>9.2f} {figures['peak_rss_mb']:>12.1f} "
            f"{figures['rows']:>11} {figures['rows_per_s'] or 0:>12.1f}  {figures['rows_of']}"
        )
    lines.append(
        f"pipeline ÷ floor: scoring (load + health) {report['ratio']['scoring']}x, chain (load → lake) {report['ratio']['chain']}x; "
        f"chain ÷ output floor {report['ratio']['chain_to_output_floor']}x (the ratio that counts)"
    )
    console = report["console"]
    lines += [
        f"console (the README's four commands, one process each): {console['wall_s']:.2f} s, "
        f"{report['ratio']['console_to_chain']}x the chain; beyond the steps is the console's own cost (target <= 2 s)",
        f"{'command':<10} {'wall s':>9} {'steps s':>9} {'beyond s':>9} {'cpu s':>9} {'peak RSS MB':>12} {'beyond cpu s':>13}",
        *(
            f"{name:<10} {figures['wall_s']:>9.2f} {figures['steps_s']:>9.2f} {figures['overhead_s']:>9.2f} "
            f"{figures['cpu_s']:>9.2f} {figures['peak_rss_mb']:>12.1f} {figures['overhead_cpu_s']:>13.2f}"
            for name, figures in console["commands"].items()
        ),
        _render_bytecode(console["bytecode"]),
    ]
    written = ", ".join(f"{name} {size / 1e6:.1f}" for name, size in report["json_bytes"].items())
    lines.append(f"JSON written by the chain: {sum(report['json_bytes'].values()) / 1e6:.1f} MB ({written})")
    out = report["output_floor"]
    lines.append(
        f"written by the output floor: JSON {out['json_bytes'] / 1e6:.1f} MB, Parquet {out['parquet_bytes'] / 1e6:.1f} MB, lake {out['lake_bytes'] / 1e6:.1f} MB"
    )
    for name, target in report["targets"].items():
        lines.append(
            f"target {name}: {'met' if target['met'] else 'MISSED'} ({target['target']}; measured {target['measured']})"
        )
    lines.append(f"written: {report['out']}")
    return "\n".join(lines) + "\n"


def _time_floors(
    settings: BenchSettings, dataset: dict[str, Any], sampler: ResourceSampler, log: Callable[[str], None]
) -> tuple[Figures, Figures, dict[str, Any]]:
    """The compute floor, then the output floor (with what it wrote: rows per record set, bytes)."""
    from c360_dagster.bench.floor import floor_measures, write_output_floor
    from c360_dagster.domain.scoring.health import load_health_config

    windows = load_health_config(Path(settings.configs_dir) / "health.yaml").windows
    as_of = dt.date.fromisoformat(dataset["as_of"])
    gc.collect()
    start = sampler.mark()
    measures = floor_measures(settings.data_dir, as_of, windows)
    compute = sampler.figures(start, sampler.mark(), measures.height)
    out = settings.work_dir / "output_floor"
    gc.collect()
    start = sampler.mark()
    rows = write_output_floor(settings.data_dir, as_of, windows, 120, out)  # the README's renewal window
    output = sampler.figures(start, sampler.mark(), sum(rows.values()))
    files = [path for path in sorted(out.rglob("*")) if path.is_file()]
    written = {
        "records": rows,
        **{
            f"{kind}_bytes": sum(p.stat().st_size for p in files if p.suffix == f".{ext}")
            for kind, ext in (("json", "json"), ("parquet", "parquet"), ("lake", "duckdb"))
        },
    }
    log(f"bench: floor {compute.wall_s:.2f} s, output floor {output.wall_s:.2f} s")
    return compute, output, written


def _time_job(job: str, paths: ProjectPaths, sampler: ResourceSampler, log: Callable[[str], None]) -> _JobRun:
    gc.collect()
    start = sampler.mark()
    result = run_job(job, paths, progress=False, partition_key="0")  # one run: the bench's book is one shard
    end = sampler.mark()
    steps = _step_windows(result.run_id)
    log(
        f"bench: {job} {end - start:.2f} s (" + ", ".join(f"{key} {b - a:.2f} s" for key, (a, b) in steps.items()) + ")"
    )
    return _JobRun(job, start, end, steps)


def _step_windows(run_id: str) -> dict[str, tuple[float, float]]:
    """Each step's (start, end) wall time in a run, from the instance's event log."""
    import dagster as dg

    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    with dg.DagsterInstance.get() as instance:
        records = instance.all_logs(run_id, of_type=kinds)
    starts = {r.step_key: r.timestamp for r in records if r.dagster_event_type == dg.DagsterEventType.STEP_START}
    return {
        r.step_key: (starts[r.step_key], r.timestamp)
        for r in records
        if r.step_key is not None and r.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS
    }


def _time_console(
    settings: BenchSettings, rows: dict[str, int], sampler: ResourceSampler, log: Callable[[str], None]
) -> dict[str, Any]:
    """The README's console sequence on the same data, each command a `python -m c360_dagster.console`
    process (import, instance, definitions and all) on a project of its own: its wall time, and
    the part of it beyond the run's steps (what the console itself costs)."""
    project = settings.work_dir / "console"
    home = (project / "dagster_home").resolve()
    common = ["--json", "--artifacts", str(project / "artifacts"), "--configs", settings.configs_dir]
    bytecode = console_bytecode(Path(__file__).resolve().parents[1])
    commands = {}
    for stage, argv in CONSOLE:
        extra = ["--dir", str(settings.data_dir)] if stage == "load" else []
        gc.collect()
        start = sampler.mark()
        completed = subprocess.run(
            [sys.executable, "-m", "c360_dagster.console", *argv, *extra, *common],
            env={**os.environ, "DAGSTER_HOME": str(home)},
            capture_output=True,
            text=True,
            check=False,
        )
        figures = sampler.figures(start, sampler.mark(), rows[stage])
        if completed.returncode != 0:
            raise RuntimeError(f"`c360 {' '.join(argv)}` failed: {completed.stderr.strip()}")
        with _dagster_home(home):
            windows = list(_step_windows(json.loads(completed.stdout)["run_id"]).values())
        steps_s = sum(end - begin for begin, end in windows)
        # The CPU beyond the steps too: on a busy machine the wall beyond them is mostly waiting for a core.
        steps_cpu_s = sum(sampler.figures(begin, end, 0).cpu_s for begin, end in windows)
        commands[stage] = {
            **figures.to_dict(ROWS_OF[stage]),
            "steps_s": round(steps_s, 3),
            "overhead_s": round(figures.wall_s - steps_s, 3),
            "overhead_cpu_s": round(figures.cpu_s - steps_cpu_s, 3),
        }
        log(
            f"bench: console c360 {' '.join(argv)} {figures.wall_s:.2f} s, {figures.wall_s - steps_s:.2f} s beyond its steps "
            f"({figures.cpu_s - steps_cpu_s:.2f} CPU-s)"
        )
    return {
        "wall_s": round(sum(c["wall_s"] for c in commands.values()), 3),
        "max_overhead_s": max(c["overhead_s"] for c in commands.values()),
        "commands": commands,
        "bytecode": bytecode,
    }


def console_bytecode(package: Path) -> dict[str, Any]:
    """Whether the console's commands compile c360's modules: those of `package` without valid
    cached bytecode, and whether the environment forbids writing it (PYTHONDONTWRITEBYTECODE, as
    this project's shells set). Then every command compiles them again, about 0.08 CPU-s, which an
    installed package or a shell without that variable does not pay after its first command
    (docs/performance.md, "Start-up, round 10")."""
    sources = sorted(package.rglob("*.py"))
    return {
        "modules": len(sources),
        "without_bytecode": sum(not _bytecode_valid(source) for source in sources),
        "dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
    }


def _bytecode_valid(source: Path) -> bool:
    """The module's cached bytecode is there and Python would use it: its header names this
    Python's magic number and the source's modification time and size (or a hash)."""
    try:
        header = Path(importlib.util.cache_from_source(str(source))).read_bytes()[:16]
    except OSError:
        return False
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if int.from_bytes(header[4:8], "little") != 0:  # hash-based: Python checks the hash (or not) itself
        return True
    stat = source.stat()
    mtime, size = int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little")
    return (mtime, size) == (int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF)


def _render_bytecode(bytecode: dict[str, Any]) -> str:
    missing, modules = bytecode["without_bytecode"], bytecode["modules"]
    if not missing:
        return f"c360's bytecode: cached for all {modules} modules"
    if bytecode["dont_write_bytecode"]:
        return (
            f"c360's bytecode: {missing} of {modules} modules compiled by every command (PYTHONDONTWRITEBYTECODE set)"
        )
    return f"c360's bytecode: {missing} of {modules} modules compiled by the first command, cached for the others"


def _job_report(job: _JobRun, sampler: ResourceSampler) -> dict[str, Any]:
    figures = sampler.figures(job.start, job.end, 0)
    step_walls = {key: round(end - start, 3) for key, (start, end) in sorted(job.steps.items())}
    return {
        "wall_s": round(figures.wall_s, 3),
        "cpu_s": round(figures.cpu_s, 3),
        "peak_rss_mb": round(figures.peak_rss_bytes / MIB, 1),
        "steps_s": step_walls,
        # The CPU of the run's processes in each step's window (steps that overlap share theirs).
        "steps_cpu_s": {key: round(sampler.figures(*job.steps[key], 0).cpu_s, 3) for key in step_walls},
        "orchestration_s": round(figures.wall_s - sum(step_walls.values()), 3),
    }


def _sum_figures(parts: list[Figures], rows: int) -> Figures:
    return Figures(
        sum(p.wall_s for p in parts), sum(p.cpu_s for p in parts), max(p.peak_rss_bytes for p in parts), rows
    )


def _lake_rows(frames: Path, counts: dict[str, int]) -> dict[str, int]:
    def height(name: str) -> int:
        return int(pl.scan_parquet(frames / f"{name}.parquet").select(pl.len()).collect().item())

    return {
        "crm_opps": counts["crm_opps"],
        "account_health": height("health"),
        "customer_signals": height("signals"),
        "renewal_forecasts": height("renewals"),
    }


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return ""


@contextlib.contextmanager
def _dagster_home(home: Path) -> Iterator[None]:
    """Run the bench on its own Dagster instance, so its partitions never reach the project's."""
    before = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = before
