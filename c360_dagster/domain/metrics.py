"""Counters in Prometheus text format (`artifacts/metrics/c360.prom`), rewritten atomically.

Each increment reads the file, adds, and rewrites it sorted under a file lock, so concurrent
processes never lose an increment and equal counts always give equal bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

from c360_dagster.domain.io import write_text_atomic
from c360_dagster.domain.locking import file_lock

LOCK_TIMEOUT_S = 30.0
METRIC_HELP = {
    "c360_loaded": "Accounts loaded into the Customer 360 view.",
    "c360_health_calc": "Accounts whose health score was computed.",
    "c360_to_lake": "crm_opps rows written to the lake.",
    "health_to_lake": "account_health rows written to the lake.",
    "signals_to_lake": "customer_signals rows written to the lake.",
    "renewals_to_lake": "renewal_forecasts rows written to the lake.",
    "qbr_generated": "QBR packs generated, per account.",
}
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')

Labels = tuple[tuple[str, str], ...]


def increment(
    path: Path,
    name: str,
    value: float = 1,
    labels: dict[str, str] | None = None,
    help: str | None = None,
) -> float:
    """Add `value` to the counter `name{labels}`; return its new total."""
    return increment_each(path, name, [(labels or {}, value)], help)[0]


def increment_each(
    path: Path,
    name: str,
    increments: list[tuple[dict[str, str], float]],
    help: str | None = None,
) -> list[float]:
    """Add to several series `(labels, value)` of the counter `name` in one rewrite; their new totals."""
    if not METRIC_NAME.match(name):
        raise ValueError(f"{name!r} is not a Prometheus metric name")
    keyed: list[tuple[Labels, float]] = []
    for labels, value in increments:
        if value < 0:
            raise ValueError(f"counter {name} cannot decrease (got {value})")
        key: Labels = tuple(sorted(labels.items()))
        for label, _ in key:
            if not LABEL_NAME.match(label):
                raise ValueError(f"{label!r} is not a Prometheus label name")
        keyed.append((key, value))
    path = Path(path)
    with file_lock(path.with_name(path.name + ".lock"), LOCK_TIMEOUT_S, f"another process is updating {path}"):
        helps, samples = _parse(path.read_text(encoding="utf-8") if path.exists() else "")
        helps[name] = help or helps.get(name) or METRIC_HELP.get(name, f"c360 counter {name}.")
        totals = []
        for key, value in keyed:
            samples[(name, key)] = samples.get((name, key), 0) + value
            totals.append(samples[(name, key)])
        write_text_atomic(path, _render(helps, samples))
    return totals


def read_metrics(path: Path) -> dict[str, float]:
    """Every sample as `{'name' or 'name{label="v"}': value}`, sorted; empty when absent."""
    path = Path(path)
    if not path.exists():
        return {}
    _, samples = _parse(path.read_text(encoding="utf-8"))
    return {_series(name, labels): value for (name, labels), value in sorted(samples.items())}


def _parse(text: str) -> tuple[dict[str, str], dict[tuple[str, Labels], float]]:
    helps: dict[str, str] = {}
    samples: dict[tuple[str, Labels], float] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP "):].partition(" ")
            helps[name] = _unescape(help_text)
        elif line.startswith("#") or not line.strip():
            continue
        elif match := SAMPLE.match(line):
            name, label_text, value = match.groups()
            labels = tuple(sorted((k, _unescape(v)) for k, v in LABEL_PAIR.findall(label_text or "")))
            samples[(name, labels)] = _number(float(value))
        else:
            raise ValueError(f"metrics file line {number} is not a Prometheus sample: {line!r}")
    return helps, samples


def _render(helps: dict[str, str], samples: dict[tuple[str, Labels], float]) -> str:
    lines: list[str] = []
    current = None
    for (name, labels), value in sorted(samples.items()):
        if name != current:
            help_text = helps.get(name, f"c360 counter {name}.").replace("\\", "\\\\").replace("\n", "\\n")
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            current = name
        lines.append(f"{_series(name, labels)} {_format(value)}")
    return "".join(line + "\n" for line in lines)


def _series(name: str, labels: Labels) -> str:
    if not labels:
        return name
    pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{name}{{{pairs}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _number(value: float) -> float:
    return int(value) if value.is_integer() else value


def _format(value: float) -> str:
    return str(_number(float(value)))
