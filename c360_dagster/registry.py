"""The `c360:*` command registry: what a command is, and the decorator that registers one.

`commands.py` registers the commands; `console.py` parses the arguments and runs them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Report = dict[str, Any]


@dataclass(frozen=True)
class Command:
    """One `c360:*` command: its arguments, what it does, and how its report reads."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Report]
    render: Callable[[Report], str]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, render: Callable[[Report], str], arguments=lambda p: None):
    """Register a `c360:<name>` command."""

    def register(run: Callable[[argparse.Namespace], Report]) -> Callable[[argparse.Namespace], Report]:
        COMMANDS[f"c360:{name}"] = Command(f"c360:{name}", help, arguments, run, render)
        return run

    return register
