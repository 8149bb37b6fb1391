"""The `c360` console shim: each `c360:*` command materializes its assets on the project's
Dagster instance (in-process executor), then prints a short human summary (or `--json`).

    c360 c360:load --dir fixtures/customer [--as-of YYYY-MM-DD]
    python -m c360_dagster.console c360:summary
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from c360_dagster.domain.core.errors import C360Error, os_fault
from c360_dagster.domain.core.io import canonical_json
from c360_dagster.domain.core.text import visible_text
from c360_dagster.registry import COMMANDS
from c360_dagster.runner import short_lived_start_up


def _project_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", default="artifacts", help="output folder (default: artifacts)")
    parser.add_argument("--configs", default="configs/customer", help="config folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c360",
        description="Offline, deterministic Customer 360 & Renewals on Dagster. Each c360:* command "
        "materializes its assets on the project's Dagster instance and prints a short summary.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        _project_args(p)
        cmd.arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Importing the commands registers them; it is done here so `import c360_dagster.console` stays cheap.
    from c360_dagster import commands  # noqa: F401

    args = build_parser().parse_args(argv)
    cmd = COMMANDS[args.command]
    try:
        report = cmd.run(args)
    except (C360Error, OSError) as exc:
        if args.debug:
            raise
        error = exc if isinstance(exc, C360Error) else os_fault(exc, args.artifacts)
        print(f"c360: {visible_text(error.describe())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("c360: interrupted; nothing half-written is left behind", file=sys.stderr)
        return 130
    # Input text reaches the terminal too: a bidi override must not reorder what it shows.
    print(visible_text(canonical_json(report, indent=2) if args.json else cmd.render(report)), end="")
    return 0 if report.get("ok", True) else 1


def script() -> NoReturn:
    """The `c360` program (`c360 ...`, `python -m c360_dagster.console ...`): main(), started
    as a short-lived process (`runner.short_lived_start_up`), then ended by `end_program`.

    Python's cyclic garbage collector is off while start-up builds Dagster's modules, the asset
    graph and the instance, and on from the first run; the parts of Dagster a command never uses
    are not imported (`deferred_imports`). These costs are measured in docs/performance.md.
    """
    short_lived_start_up()
    end_program(main())


def end_program(code: int) -> NoReturn:
    """End the program with exit status `code` as Python's own exit would, without tearing the
    interpreter down (docs/performance.md, "Start-up, round 10").

    Python's exit joins the threads that are not daemons, runs the `atexit` handlers (logging's
    shutdown, multiprocessing's finalizers, weakref finalizers such as temporary folders'),
    flushes stdout and stderr, then frees every module and object one by one, which a process
    about to end does not need. The first three are done here, then the process ends at once:
    `os._exit`. Every file c360 writes is synced and closed before its command returns, and the
    instance's connections are closed when it is disposed. A thread still running, or a stream
    that cannot be flushed (a closed pipe), takes Python's own exit, which reports it as before.
    """
    main_thread = threading.main_thread()
    if any(thread is not main_thread and thread.is_alive() and not thread.daemon for thread in threading.enumerate()):
        _python_exit(code)
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        _python_exit(code)
    os._exit(code)


def _python_exit(code: int) -> NoReturn:
    # What start-up built is frozen: the exit's last collection does not scan it (about a second of CPU).
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    # Run as a script this file is `__main__`; the commands register on the importable module.
    from c360_dagster.console import script as package_script

    package_script()
