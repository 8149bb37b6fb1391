"""The run counters (`artifacts/metrics/c360.prom`) in Prometheus' text format, via prometheus_client.

The counters and their labels are declared below and their series are few and fixed: no label
takes an account id (per-account facts belong in the lake and the signed event log). So an
increment rereads and rewrites a file of a few hundred bytes, under a lock of its own: the
same cost after a million runs as after one, and no increment is lost between processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from c360_dagster.domain.core.errors import C360Error
from c360_dagster.domain.core.io import write_text_atomic
from c360_dagster.domain.core.locking import file_lock

LOCK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Counter:
    """A declared counter: its help text and the names of its (bounded) labels."""

    help: str
    labels: tuple[str, ...] = ()


# Names as exposed, without the `_total` every counter's sample gets.
COUNTERS = {
    "c360_accounts_loaded": Counter("Accounts loaded into the Customer 360 view."),
    "c360_accounts_scored": Counter(
        "Accounts given a health score (not churned, not-started or not-enough-data ones)."
    ),
    "c360_lake_rows_written": Counter("Rows written to a lake table.", ("table",)),
    "c360_qbr_packs_generated": Counter("QBR packs generated."),
}

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def increment(path: Path, name: str, value: float = 1, labels: dict[str, str] | None = None) -> float:
    """Add `value` to the counter `name{labels}` in the file at `path`; return its new total."""
    counter = COUNTERS.get(name)
    if counter is None:
        raise ValueError(f"{name!r} is not a declared counter (one of {', '.join(sorted(COUNTERS))})")
    if value < 0:
        raise ValueError(f"counter {name} cannot decrease (got {value})")
    if sorted(labels or {}) != sorted(counter.labels):
        raise ValueError(f"counter {name} takes the labels {list(counter.labels)}, got {sorted(labels or {})}")
    key = (name, tuple(sorted((labels or {}).items())))
    path = Path(path)
    with file_lock(path.with_name(path.name + ".lock"), LOCK_TIMEOUT_S, f"another process is updating {path}"):
        samples = _read(path)
        samples[key] = samples.get(key, 0.0) + value
        write_text_atomic(path, exposition(samples))
    return samples[key]


def read_metrics(path: Path) -> dict[str, float]:
    """Every sample as `{'name_total' or 'name_total{label="v"}': value}`, sorted; empty when absent."""
    return {
        f"{name}_total" + ("{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""): value
        for (name, labels), value in sorted(_read(Path(path)).items())
    }


def exposition(samples: Samples) -> str:
    """The counters' text exposition: declared counters by name, series by labels, so equal counts give equal bytes."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(samples))
    return generate_latest(registry).decode("utf-8")


class _Collector:
    def __init__(self, samples: Samples) -> None:
        self.samples = samples

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name in sorted({name for name, _ in self.samples}):
            family = CounterMetricFamily(name, COUNTERS[name].help, labels=COUNTERS[name].labels)
            for (of, labels), value in sorted(self.samples.items()):
                if of == name:
                    family.add_metric([dict(labels)[label] for label in COUNTERS[name].labels], value)
            yield family


def _read(path: Path) -> Samples:
    """The declared counters' samples in the file (series of undeclared names are not carried over)."""
    if not path.exists():
        return {}
    try:
        families = list(text_string_to_metric_families(path.read_text(encoding="utf-8")))
    except ValueError as exc:
        raise C360Error(
            f"{path} is not a Prometheus text exposition ({exc}); move it aside", code="METRICS_INVALID"
        ) from exc
    return {
        (family.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        if family.name in COUNTERS and family.type == "counter"
        for sample in family.samples
        if sample.name == family.name + "_total"
    }
