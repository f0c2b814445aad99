"""Two arrays held against each other: the element-wise comparison every check makes (scaled
tolerance, the FD error estimate, non-differentiable elements judged by their one-sided limits,
NaN on one side), and the conventions that are not errors (a symmetric-matrix gradient)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.judge.tolerance import Tolerance


@dataclass
class Comparison:
    verdict: str                 # pass | diverge | nan
    max_abs_err: float
    max_rel_err: float           # max |got - expected| / scale: error relative to the gradient's size
    worst_index: list
    got: float | None
    expected: float | None
    elements: int
    bad_elements: int
    nondiff_elements: int = 0
    fd_err: float | None = None
    outside_hull: int = 0        # nondiff elements whose autodiff value is outside the one-sided limits
    nonfinite_side: str = ""
    nonfinite_at_kinks: bool = False  # every NaN/inf mismatch is at a non-differentiable element


def element_index(flat_index: int, shape) -> list:
    """A flat index as the element's index in ``shape`` (a list, JSON-able)."""
    return [int(i) for i in np.unravel_index(flat_index, shape)] if shape else []


def compare_arrays(got, expected, tol: Tolerance, scale: float, fd_error=None, nondiff=None,
                   left=None, right=None, kinks=None) -> Comparison:
    """Elementwise: |got - expected| <= atol * scale + rtol * |expected| (+ FD's error estimate).

    Where ``nondiff`` marks an element, the FD value is no derivative: the element passes when
    autodiff lies within the one-sided limits [left, right] (any subgradient convention), and
    counts as ``outside_hull`` otherwise. ``kinks`` (default: ``nondiff``) marks the elements
    finite differences found non-differentiable, only to tell whether every NaN/inf mismatch is
    at one of them (``nonfinite_at_kinks``).
    """
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    shape = expected.shape
    g, e = got.reshape(-1), expected.reshape(-1)
    finite_g, finite_e = np.isfinite(g), np.isfinite(e)
    same_nonfinite = (~finite_g & ~finite_e) & ((g == e) | (np.isnan(g) & np.isnan(e)))
    mismatch_nonfinite = (finite_g != finite_e) | ((~finite_g & ~finite_e) & ~same_nonfinite)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(finite_g & finite_e, np.abs(g - e), 0.0)
        allowed = tol.allowed(e, scale, None if fd_error is None else np.asarray(fd_error).reshape(-1))
        bad = err > allowed
        nd_count = hull_bad = 0
        if nondiff is not None:
            nd = np.asarray(nondiff, dtype=bool).reshape(-1)
            lo = np.minimum(left.reshape(-1), right.reshape(-1)) - allowed
            hi = np.maximum(left.reshape(-1), right.reshape(-1)) + allowed
            inside = (g >= lo) & (g <= hi)
            hull_bad = int(np.sum(nd & ~inside & finite_g))
            bad = np.where(nd, ~inside & finite_g, bad)
            err = np.where(nd & inside, 0.0, err)
            nd_count = int(nd.sum())
    bad = bad | mismatch_nonfinite
    kinks = nondiff if kinks is None else kinks
    at_kinks = bool(mismatch_nonfinite.any() and kinks is not None
                    and not (mismatch_nonfinite & ~np.asarray(kinks, dtype=bool).reshape(-1)).any())
    ratio = np.where(mismatch_nonfinite, np.inf, err / np.maximum(allowed, 1e-300))
    worst = int(np.argmax(ratio)) if ratio.size else 0
    verdict = "nan" if mismatch_nonfinite.any() else ("diverge" if bad.any() else "pass")
    side = ""
    if mismatch_nonfinite.any():
        side = "got" if (~finite_g & finite_e).any() else "expected"
    max_abs = float(err.max(initial=0.0))
    return Comparison(
        verdict=verdict, max_abs_err=max_abs, max_rel_err=max_abs / scale if scale else max_abs,
        worst_index=element_index(worst, shape), got=float(g[worst]) if g.size else None,
        expected=float(e[worst]) if e.size else None, elements=int(g.size), bad_elements=int(bad.sum()),
        nondiff_elements=nd_count, outside_hull=hull_bad, nonfinite_side=side, nonfinite_at_kinks=at_kinks,
        fd_err=float(np.asarray(fd_error).reshape(-1)[worst]) if fd_error is not None and g.size else None)


#: one-sided limits beyond this multiple of the gradient's scale are a jump (they grow as 1/step),
#: not the slopes of a kink
JUMP_SLOPE = 1e3


def continuous_kinks(nondiff, left, right, scale: float):
    """The non-differentiable elements where f is continuous (a kink: finite one-sided slopes
    of the gradient's size), as opposed to a jump or a singularity (slopes of size 1/step)."""
    with np.errstate(invalid="ignore"):
        bounded = np.isfinite(left) & np.isfinite(right) & (np.maximum(np.abs(left), np.abs(right)) <= JUMP_SLOPE * scale)
    return np.asarray(nondiff, dtype=bool) & bounded


def _symmetrised(a):
    a = np.asarray(a, dtype=np.float64)
    return (a + np.swapaxes(a, -1, -2)) / 2


def symmetric_agreement(got, expected, tol: Tolerance, scale: float, fd_error=None) -> bool:
    """Do two gradients of a square-matrix parameter agree once both are projected onto
    symmetric matrices (the directions a symmetric input can move in)? Linear algebra on a
    symmetric input (cholesky, eigh) reads one triangle, and frameworks return that read's
    gradient, its symmetrised form, or a triangular one: conventions, not errors."""
    got, expected = np.asarray(got), np.asarray(expected)
    if got.ndim < 2 or got.shape[-1] != got.shape[-2] or got.shape[-1] < 2 or got.shape != expected.shape:
        return False
    err = None if fd_error is None else _symmetrised(np.asarray(fd_error)) * 2
    return compare_arrays(_symmetrised(got), _symmetrised(expected), tol, scale, fd_error=err).verdict == "pass"


__all__ = ["JUMP_SLOPE", "Comparison", "compare_arrays", "element_index", "continuous_kinks", "symmetric_agreement"]
