"""One error hierarchy: every error a user can act on is a HarnessError, which the CLI catches
in one place and prints as one line (``error: ...``) with its exit code, nothing half-written.

Errors that become records instead (a case's loss raising inside a worker, a non-finite loss)
are not here: they are findings about a case, not about how the harness was used."""
from __future__ import annotations


class HarnessError(Exception):
    """An error the user can act on: one line, exit code ``exit_code``."""

    exit_code = 2


class UsageError(HarnessError, ValueError):
    """The command line asks for something that cannot be done (an unknown name, a bad value, an
    output folder that is a file)."""


class RunError(HarnessError):
    """A run cannot go on for a reason outside the cases (no worker could start, a shard missing)."""


class OutputError(RunError):
    """The output folder cannot be created or written (read-only, full disk)."""


class RunFolderError(HarnessError, ValueError):
    """A folder or results file that cannot be read back as a run."""


__all__ = ["HarnessError", "OutputError", "RunError", "RunFolderError", "UsageError"]
