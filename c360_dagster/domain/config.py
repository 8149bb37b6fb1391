"""YAML configs validated against a JSON Schema, with errors that name the offending key."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from c360_dagster.domain.errors import ConfigError
from c360_dagster.domain.io import canonical_json, sha256_bytes

# libyaml's safe loader when PyYAML was built with it (several times faster), else the pure one.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def key_path(path: Any) -> str:
    """`components.adoption.weight` from a jsonschema error path."""
    return ".".join(str(part) for part in path) or "(top level)"


def validate_config(data: Any, schema: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Validate `data` against `schema`; raise ConfigError naming file and key on the first error."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.path)), e.message))
    if errors:
        first = errors[0]
        path = list(first.path)
        if first.validator == "additionalProperties":
            unknown = sorted(set(first.instance) - set(first.schema.get("properties", {})))
            path += unknown[:1]
            message = f"unknown key (allowed: {', '.join(sorted(first.schema.get('properties', {})))})"
        elif first.validator == "required":
            missing = [k for k in first.validator_value if k not in first.instance]
            path += missing[:1]
            message = "missing required key"
        else:
            message = first.message
        raise ConfigError(f"{source}: {key_path(path)}: {message}")
    return data


def load_yaml_config(path: Path | str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Read a YAML file and validate it; a missing file or bad YAML is a ConfigError too."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)  # noqa: S506 - a safe loader
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return validate_config(data, schema, str(path))


def config_hash(config: Mapping[str, Any]) -> str:
    """Content hash of a parsed config, independent of YAML formatting and key order."""
    return sha256_bytes(canonical_json(config).encode("utf-8"))
