"""Known failures, each one line for the user: what went wrong and how to fix it.

Raised deep down (config, registries, data sources, checkpoints, store) and caught only in
`rethink.cli`, which prints `error: <message> (<hint>)` and exits with status 2.
"""

from __future__ import annotations


class RethinkError(Exception):
    """A user-facing error: `message` says what is wrong, `hint` says what to do."""

    # A sweep stops on it (the user must fix something first), unless a subclass says otherwise.
    stops_sweep = True

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(RethinkError):
    """An invalid run configuration: unknown name, value out of range, bad combination."""


class DataError(RethinkError):
    """Missing, corrupt or malformed dataset files."""


class CheckpointError(RethinkError):
    """A checkpoint that cannot be used: truncated, corrupt, or from another config."""


class StoreError(RethinkError):
    """The results database cannot be opened or written."""


class ResourceError(RethinkError):
    """A run ran out of a resource (memory). Its run is stored as failed; a sweep goes on."""

    stops_sweep = False
