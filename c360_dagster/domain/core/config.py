"""YAML configs validated against a JSON Schema, with errors that name the offending key.

A config is also an attack surface: it is read bounded (`MAX_CONFIG_BYTES`), parsed without
anchors or aliases (a "billion laughs" document is a few lines of aliases that expand
exponentially in every consumer walking the result), nested at most `MAX_CONFIG_DEPTH` deep,
every number in it must be finite, and no error quotes more of the file than a short value.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from c360_dagster.domain.core.errors import ConfigError
from c360_dagster.domain.core.io import canonical_json, sha256_bytes

# libyaml's safe loader when PyYAML was built with it (several times faster), else the pure one.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_CONFIG_BYTES = 1 << 20  # the largest shipped config is 14 KB
MAX_CONFIG_DEPTH = 32  # the shipped configs nest at most 6 deep
_MAX_QUOTED = 40  # longest text of the file an error message repeats


def _short(value: Any) -> str:
    """A value as an error message may show it: short scalars as is, anything else by its kind."""
    if isinstance(value, str):
        if len(value) <= _MAX_QUOTED and value.isprintable():
            return repr(value)
        return f"a text of {len(value)} characters"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def key_path(path: Any) -> str:
    """`components.adoption.weight` from a jsonschema error path."""
    return ".".join(str(part) for part in path) or "(top level)"


def validate_config(data: Any, schema: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Validate `data` against `schema`; raise ConfigError naming file and key on the first error."""
    require_finite(data, source)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.path)), e.message))
    if errors:
        first = errors[0]
        path = list(first.path)
        if first.validator == "additionalProperties":
            unknown = sorted(map(str, set(first.instance) - set(first.schema.get("properties", {}))))
            path += [name if len(name) <= _MAX_QUOTED else name[:_MAX_QUOTED] + "…" for name in unknown[:1]]
            message = f"unknown key (allowed: {', '.join(sorted(first.schema.get('properties', {})))})"
        elif first.validator == "required":
            missing = [k for k in first.validator_value if k not in first.instance]
            path += missing[:1]
            message = "missing required key"
        elif not path and first.validator == "type":
            held = "nothing" if first.instance is None else _short(first.instance)
            message = f"the file holds {held}, not a mapping of settings"
        else:
            # jsonschema's messages start with the value's repr, which may be the whole file.
            shown = repr(first.instance)
            message = first.message
            if message.startswith(shown):
                message = _short(first.instance) + message[len(shown) :]
        raise ConfigError(f"{source}: {key_path(path)}: {message}")
    return data


def load_yaml_config(path: Path | str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Read a YAML file and validate it; any way it can fail is a ConfigError naming the file."""
    path = Path(path)
    text = read_config_text(path)
    # A run reads its configs several times, and parsing and validating one costs milliseconds: done
    # once per file text and schema in a process; each caller gets a copy of its own.
    return copy.deepcopy(_validated_yaml(str(path), text, json.dumps(schema, sort_keys=True)))


@functools.lru_cache(maxsize=64)
def _validated_yaml(source: str, text: str, schema_json: str) -> Any:
    return validate_config(parse_yaml(text, source), json.loads(schema_json), source)


def read_config_text(path: Path) -> str:
    """The file's text, read at most `MAX_CONFIG_BYTES` (+1 to notice a longer one)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give the path of a YAML config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; a config is a short YAML file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a config is a YAML file") from None


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text, refusing anchors, aliases and deep nesting before anything is built."""
    try:
        depth = 0
        for event in yaml.parse(text, Loader=SAFE_LOADER):
            line = event.start_mark.line + 1 if event.start_mark else "?"
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ConfigError(
                    f"{source}: line {line}: anchors and aliases (&name, *name) "
                    "are not allowed in a config; write each value out"
                )
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_CONFIG_DEPTH:
                    raise ConfigError(f"{source}: line {line}: nested more than {MAX_CONFIG_DEPTH} levels deep")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        return yaml.load(text, Loader=SAFE_LOADER)  # a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {(exc.problem or 'parse error')[:80]}") from None
    except yaml.YAMLError as exc:  # e.g. a control character: the reader's reason, not the text
        raise ConfigError(f"{source}: not valid YAML: {str(getattr(exc, 'reason', 'parse error'))[:80]}") from None


def require_finite(data: Any, source: str, path: tuple[Any, ...] = ()) -> None:
    """Refuse `.nan` and `.inf` anywhere: JSON Schema's bounds let them through (nan < 0 is false)."""
    if isinstance(data, float) and not math.isfinite(data):
        raise ConfigError(f"{source}: {key_path(path)}: must be a finite number, got {data}")
    if isinstance(data, Mapping):
        for key, value in data.items():
            require_finite(value, source, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            require_finite(value, source, (*path, index))


def config_hash(config: Mapping[str, Any]) -> str:
    """Content hash of a parsed config, independent of YAML formatting and key order."""
    return sha256_bytes(canonical_json(config).encode("utf-8"))


# configs/customer/scale.yaml: how the book is split and where the lake lives (docs/architecture.md).
SCALE_FILE = "scale.yaml"
SCALE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "shards": {"type": "integer", "minimum": 1, "maximum": 256},
        "lake": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "format": {"enum": ["duckdb", "delta"]},
                "location": {"type": "string", "minLength": 1},
                "storage_options": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    },
}
SCALE_DEFAULTS: dict[str, Any] = {"shards": 1, "lake": {}}


def load_scale_config(configs_dir: Path | str) -> dict[str, Any]:
    """`scale.yaml` in `configs_dir`, defaults filled in; an absent file means all defaults."""
    path = Path(configs_dir) / SCALE_FILE
    if not path.exists():
        return dict(SCALE_DEFAULTS)
    data = parse_yaml(read_config_text(path), str(path))
    return {**SCALE_DEFAULTS, **validate_config({} if data is None else data, SCALE_SCHEMA, str(path))}
