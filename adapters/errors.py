"""What an adapter raises about a case, each becoming a record: a capability the framework
lacks (`skipped`, with the reason) or a case that breaks the interface's contract (`error`)."""
from __future__ import annotations


class Unsupported(Exception):
    """An op, dtype, device or mode the framework lacks: reported as `skipped` with this reason."""


class ScalarError(TypeError):
    """The loss did not return a real scalar: a bug in the case, reported as `error`."""


class ShapeError(ValueError):
    """A transform returned a different number of elements than its parameter has: an error
    record, never a silently reshaped or dropped comparison."""


__all__ = ["ScalarError", "ShapeError", "Unsupported"]
