"""Tolerances as a dtype-keyed table, merged with a case's overrides (JAX public_test_util style).

An element passes when |got - expected| <= atol * scale + rtol * |expected| (+ the finite
difference's own error estimate when FD is the expectation). ``scale`` is the largest magnitude
of the expected gradient over all differentiated parameters, so a parameter whose gradient is
tiny next to the others is not held to an absurd absolute bound, and a gradient near zero is
judged against the size of the whole gradient, not against itself. Every record stores the
atol and rtol it used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def as_dict(self):
        return {"rtol": self.rtol, "atol": self.atol}

    def allowed(self, expected, scale: float, fd_error=None):
        """The largest |got - expected| that passes, elementwise: atol * scale + rtol * |expected|,
        plus FD_ERROR_SAFETY times the finite difference's error estimate where FD is expected.
        Non-finite expectations allow nothing beyond atol (they are judged separately)."""
        expected = np.asarray(expected, dtype=np.float64)
        bound = self.atol * scale + self.rtol * np.where(np.isfinite(expected), np.abs(expected), 0.0)
        if fd_error is not None:
            bound = bound + FD_ERROR_SAFETY * np.nan_to_num(np.asarray(fd_error, dtype=np.float64), posinf=0.0)
        return bound


def gradient_norm(arrays) -> float:
    """The L2 norm of a whole gradient (a list of arrays), the scale of a projection onto a unit
    direction."""
    return float(np.sqrt(sum(np.sum(g * g) for g in arrays)))


def gradient_scale(arrays: dict) -> float:
    """The size of a whole gradient (largest finite magnitude over all its parameters)."""
    finite = [np.abs(a[np.isfinite(a)]).max() for a in arrays.values() if np.isfinite(a).any()]
    scale = max(finite, default=0.0)
    return float(scale) if scale > 0 else 1.0


#: ordinary rounding of each dtype through a few dozen ops; a reduced-precision policy (TF32 has
#: a 10-bit mantissa: ~5e-4 relative) or a wrong gradient is well outside.
DTYPE_TOLERANCE = {
    "float64": Tolerance(rtol=1e-7, atol=1e-9),
    "float32": Tolerance(rtol=1e-4, atol=2e-5),
    "bfloat16": Tolerance(rtol=5e-2, atol=2e-2),
    "float16": Tolerance(rtol=1e-2, atol=5e-3),
}

#: autodiff in float64 against the FD estimate, on top of FD's own error estimate
FD_TOLERANCE = Tolerance(rtol=1e-6, atol=1e-8)

#: FD's error estimate is itself an estimate: allow this multiple of it
FD_ERROR_SAFETY = 10.0


def lookup(dtype: str, overrides: dict | None = None, key: str | None = None) -> Tolerance:
    """The table entry for ``dtype`` (or ``key``, e.g. 'fd'), replaced field by field by a case's
    ``tolerance={dtype: {"rtol": ..., "atol": ...}}``."""
    base = FD_TOLERANCE if key == "fd" else DTYPE_TOLERANCE[dtype]
    override = (overrides or {}).get(key or dtype, {})
    unknown = set(override) - {"rtol", "atol"}
    if unknown:
        raise ValueError(f"tolerance override has unknown fields {sorted(unknown)}")
    return Tolerance(rtol=float(override.get("rtol", base.rtol)), atol=float(override.get("atol", base.atol)))


__all__ = ["DTYPE_TOLERANCE", "FD_ERROR_SAFETY", "FD_TOLERANCE", "gradient_norm", "gradient_scale", "lookup",
           "Tolerance"]
