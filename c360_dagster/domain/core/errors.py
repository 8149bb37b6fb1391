"""User-facing errors: each carries a message a person can act on, never a traceback."""

from __future__ import annotations

import errno


class C360Error(Exception):
    """Base for every error caused by the user's inputs, configs or request."""

    code = "C360_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    def describe(self) -> str:
        """`CODE: message`, without repeating a code the message already starts with."""
        message = str(self)
        return message if message.startswith(self.code) else f"{self.code}: {message}"


class InputError(C360Error):
    """An input file breaks the contract of docs/inputs.md."""

    code = "INPUT_INVALID"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        where = ", ".join(
            part
            for part in (
                f"file {file}" if file else "",
                f"row {row}" if row is not None else "",
                f"column {column}" if column else "",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.row, self.column = file, row, column


class ConfigError(C360Error):
    """A YAML config is missing a key, has an unknown one, or a value out of range."""

    code = "CONFIG_INVALID"


class ContractError(C360Error):
    """Rows bound for the lake break the table's JSON Schema contract."""

    code = "CONTRACT_VIOLATION"


class GateError(C360Error):
    """A governance gate (duty-of-care, privacy) blocks an output; `code` names the gate."""


# What to do about an operating-system fault, by errno; the code names the fault.
_OS_FAULTS = {
    errno.ENOSPC: ("DISK_FULL", "free some space and run the command again"),
    errno.EDQUOT: ("DISK_FULL", "free some space and run the command again"),
    errno.EROFS: ("READ_ONLY", "remount it read-write or point --artifacts (or DAGSTER_HOME) at a writable folder"),
    errno.EACCES: (
        "PERMISSION_DENIED",
        "make it writable for this user or point --artifacts (or DAGSTER_HOME) elsewhere",
    ),
    errno.EPERM: (
        "PERMISSION_DENIED",
        "make it writable for this user or point --artifacts (or DAGSTER_HOME) elsewhere",
    ),
}


def os_fault(exc: OSError, folder: str) -> C360Error:
    """An operating-system fault (full disk, read-only or forbidden path) as a user-facing error.

    A failed write() names no file; then the message names the `folder` being written.
    """
    code, advice = _OS_FAULTS.get(exc.errno or 0, ("OS_ERROR", "check the path and run the command again"))
    where = exc.filename if exc.filename is not None else f"writing under {folder}"
    return C360Error(f"{where}: {exc.strerror or exc}; {advice}", code=code)
