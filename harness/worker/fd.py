"""Finite differences, written once for every framework, over batched evaluation.

Central differences at two steps (h and h/2) give a Richardson-extrapolated derivative with
O(h^4) truncation error and, from the gap between the two, a per-element *error estimate*.
The same evaluations also give second-order one-sided derivatives (left and right), which
expose kinks that a symmetric stencil hides (relu or |x| at 0: the central difference is a
smooth-looking 0.5 or 0). An element whose one-sided limits disagree, or whose error estimate
is large against the derivative, is flagged non-differentiable: the checks then judge autodiff
by the one-sided limits and by cross-framework agreement, never against the FD value.

Checking autodiff, ``full`` is adaptive: a first pass takes one central difference per element
(2 evaluations, step eps^(1/3): error ~1e-11 relative), and only the elements it cannot settle
get the full stencil above (4 more): every element whose autodiff value disagrees with it, and
every element whose two one-sided quotients differ enough to hide a kink. An element settled in
the first pass agreed with autodiff with no allowance for truncation error (its error estimate is
the rounding bound alone), so where f is smooth across the full stencil the shortcut can only
send more elements to it, never pass one it would fail. (A kink or jump between the two step
sizes, ~1e-5 and ~1e-3 from the point, is seen by the full stencil only; the first pass, being
more local, rightly treats the point itself as smooth.)

The evaluation callables come from an adapter (numpy in, numpy out), so this module imports
no framework.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EPS64 = float(np.finfo(np.float64).eps)
#: Richardson of central differences: truncation O(h^4), rounding O(eps/h) => h ~ eps^(1/5)
BASE_STEP = EPS64 ** 0.2
#: one central difference: truncation O(h^2), rounding O(eps/h) => h ~ eps^(1/3)
CENTRAL_STEP = EPS64 ** (1 / 3)
#: one row of a perturbed batch holds one copy of the perturbed parameter: cap each chunk
#: (measured on the 81,810-parameter MLP of benchmarks/fd_vs_gradcheck.py, 2 cores: 4 MiB 7.3 s,
#: 16 MiB 3.8 s, 32 MiB 4.2 s, 64 MiB 11 s; per-call overhead below, allocation above)
CHUNK_BYTES = 16 * 2 ** 20
#: a derivative whose one-sided limits differ by more than this (relative) is a kink
KINK_RTOL = 1e-4
#: an error estimate above this fraction of the derivative's scale is no derivative at all
UNRELIABLE_RTOL = 1e-3


@dataclass
class FDResult:
    """Per-parameter arrays, in the parameters' own shapes."""
    estimate: list = field(default_factory=list)   # Richardson (or first-pass central) derivative
    error: list = field(default_factory=list)      # error estimate (truncation + rounding)
    left: list = field(default_factory=list)       # one-sided derivative from below
    right: list = field(default_factory=list)      # one-sided derivative from above
    nondiff: list = field(default_factory=list)    # bool: kink, discontinuity or singularity
    refined: list = field(default_factory=list)    # bool: took the full stencil
    evaluations: int = 0


def steps_for(x: np.ndarray, base: float = BASE_STEP) -> np.ndarray:
    """Per-element step: ``base`` relative to the magnitude, absolute below 1. Rounded so that
    x + h is exact: the step actually taken is the step used."""
    h = base * np.maximum(np.abs(x), 1.0)
    return (x + h) - x


def full(evaluate_elementwise, params: list, f0: float, chunk_bytes: int = CHUNK_BYTES,
         accept=None) -> FDResult:
    """Every element of every parameter.

    ``evaluate_elementwise(i, flat_index, delta) -> values`` evaluates f with element
    flat_index[b] of parameter i shifted by delta[b]. Without ``accept``, every element gets the
    full stencil (4 evaluations: x +- h, x +- h/2). With ``accept(i, estimate, error) -> bool
    array`` (the caller's verdict of autodiff against a derivative of parameter i, flat), the
    first pass above settles the elements it accepts (2 evaluations) and refines the rest.
    """
    result = FDResult()
    for i, x in enumerate(params):
        flat = x.reshape(-1)
        n = flat.size
        # one batch shape for every call on this parameter (a compiling framework traces once):
        # a multiple of 4 rows, no more than the first pass over every element needs
        rows_per_chunk = min(max(4, chunk_bytes // max(1, flat.nbytes)) // 4 * 4, -(-2 * n // 4) * 4)
        estimate, error = np.empty(n), np.empty(n)
        left, right = np.empty(n), np.empty(n)
        nondiff, refine = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
        if accept is not None and n:
            h = steps_for(flat, CENTRAL_STEP)
            values = _evaluate(evaluate_elementwise, i, np.arange(n), np.stack([h, -h], axis=1), rows_per_chunk)
            estimate, error, left, right, smooth = _central(values, h, f0)
            refine = ~(smooth & np.asarray(accept(i, estimate, error), dtype=bool))
            result.evaluations += 2 * n
        idx = np.flatnonzero(refine)
        if idx.size:
            floor = _floor(estimate) if idx.size < n else None
            estimate[idx], error[idx], left[idx], right[idx], nondiff[idx] = _stencil(
                evaluate_elementwise, i, flat, idx, f0, rows_per_chunk, floor)
            result.evaluations += 4 * idx.size
        for name, arr in (("estimate", estimate), ("error", error), ("left", left), ("right", right),
                          ("nondiff", nondiff), ("refined", refine)):
            getattr(result, name).append(arr.reshape(x.shape))
    return result


def _stencil(evaluate_elementwise, i, flat, idx, f0, rows_per_chunk, floor=None):
    """The full stencil at elements ``idx`` of parameter i: (estimate, error, left, right, nondiff)."""
    h = steps_for(flat[idx])
    half = (flat[idx] + h / 2) - flat[idx]
    values = _evaluate(evaluate_elementwise, i, idx, np.stack([h, -h, half, -half], axis=1), rows_per_chunk)
    return _combine(values, h, half, f0, floor)


def _evaluate(evaluate_elementwise, i, idx, deltas, rows):
    """f at every (element, step) pair: ``deltas`` is (len(idx), k); returns (len(idx), k).
    Every call gets exactly ``rows`` rows (a short chunk is padded with unshifted rows), so a
    framework that compiles per batch shape compiles once per parameter."""
    k = deltas.shape[1]
    per_chunk = max(1, rows // k)
    values = np.empty((idx.size, k))
    for start in range(0, idx.size, per_chunk):
        part = slice(start, start + per_chunk)
        flat_index, delta = np.repeat(idx[part], k), deltas[part].reshape(-1)
        used, pad = delta.size, rows - delta.size
        if pad > 0:
            flat_index = np.concatenate([flat_index, np.zeros(pad, dtype=flat_index.dtype)])
            delta = np.concatenate([delta, np.zeros(pad)])
        values[part] = np.asarray(evaluate_elementwise(i, flat_index, delta)).reshape(-1)[:used].reshape(-1, k)
    return values


def _central(values, h, f0):
    """The first pass: the central difference, its rounding bound, the one-sided quotients, and
    whether the element looks smooth. Three points cannot tell a kink from curvature, so an
    element whose quotients differ by more than a kink would is sent to the full stencil."""
    fp, fm = values.T
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        estimate = (fp - fm) / (2 * h)
        rounding = 8 * EPS64 * np.maximum.reduce([np.abs(fp), np.abs(fm), np.full_like(fp, abs(f0))]) / h
        right, left = (fp - f0) / h, (f0 - fm) / h
        scale = np.maximum(np.maximum(np.abs(left), np.abs(right)), _floor(estimate))
        smooth = (np.abs(right - left) <= KINK_RTOL * scale + 10 * rounding) & np.isfinite(estimate)
    return estimate, rounding, left, right, smooth


def _richardson(fp, fm, fph, fmh, h, half, magnitude):
    """Central differences at steps h and half, extrapolated: (estimate, truncation, rounding),
    the last two the parts of its error estimate (``magnitude``: the largest |f| involved)."""
    d1 = (fp - fm) / (2 * h)
    d2 = (fph - fmh) / (2 * half)
    return d2 + (d2 - d1) / 3, np.abs(d2 - d1) / 3, 8 * EPS64 * magnitude / half


def _point_step(params) -> float:
    """One step for a direction through all parameters: BASE_STEP relative to the point's scale."""
    return BASE_STEP * max(1.0, max(float(np.abs(p).max(initial=0.0)) for p in params))


def _combine(values, h, half, f0, floor=None):
    """The full stencil; ``floor`` is the scale below which a derivative counts as zero (by
    default from these estimates; the first pass's, when only some elements are refined)."""
    fp, fm, fph, fmh = values.T
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        magnitude = np.maximum.reduce([np.abs(fp), np.abs(fm), np.abs(fph), np.abs(fmh),
                                       np.full_like(fp, abs(f0))])
        estimate, truncation, rounding = _richardson(fp, fm, fph, fmh, h, half, magnitude)
        # one-sided, second order: (-3 f(x) + 4 f(x + h/2) - f(x + h)) / h
        right = (-3 * f0 + 4 * fph - fp) / (2 * half)
        left = (3 * f0 - 4 * fmh + fm) / (2 * half)
        error = truncation + rounding
        scale = np.maximum(np.abs(left), np.abs(right))
        # smooth f: the one-sided O(h^2) errors cancel in right - left, leaving O(h^3)
        kink = np.abs(right - left) > KINK_RTOL * scale + 10 * rounding + 1e3 * truncation
        # a jump or a singularity: the two central steps disagree (noise alone is not that)
        floor = _floor(estimate) if floor is None else floor
        broken = truncation > UNRELIABLE_RTOL * np.maximum(np.abs(estimate), floor)
        nondiff = kink | broken | ~np.isfinite(estimate)
    return estimate, error, left, right, nondiff


def _floor(estimate):
    """A scale below which a derivative counts as zero: a millionth of the largest."""
    finite = np.abs(estimate[np.isfinite(estimate)])
    return (finite.max() if finite.size else 1.0) * 1e-6 + 1e-300


def directional(evaluate_directions, params: list, f0: float, directions: list) -> tuple:
    """Richardson derivative of f along each direction (a list over params of (k, *shape)
    arrays). Returns (estimate (k,), error (k,)). Step relative to the point's scale."""
    k = directions[0].shape[0]
    h = _point_step(params)
    steps = np.array([h, -h, h / 2, -h / 2])
    values = np.empty((k, 4))
    for j in range(k):
        dirs = [np.repeat(d[j][None], 4, axis=0) for d in directions]
        values[j] = evaluate_directions(dirs, steps)
    magnitude = np.maximum(np.max(np.abs(values), axis=1), abs(f0))
    estimate, truncation, rounding = _richardson(*values.T, h, h / 2, magnitude)
    return estimate, truncation + rounding


def random_directions(rng: np.random.Generator, shapes: list, k: int) -> list:
    """k random directions of unit norm over all parameters together."""
    raw = [rng.standard_normal((k,) + tuple(s)) for s in shapes]
    norm = np.sqrt(sum((r.reshape(k, -1) ** 2).sum(axis=1) for r in raw))
    return [r / norm.reshape((k,) + (1,) * len(s)) for r, s in zip(raw, shapes)]


#: complex step: no subtractive cancellation, so the step can be far below rounding of x itself
COMPLEX_STEP = 1e-20


def complex_step(evaluate_complex, params: list, chunk_bytes: int = CHUNK_BYTES) -> list:
    """Complex-step derivative of every element: Im f(x + i h e_j) / h (Squire & Trapp).
    One complex evaluation per element, exact to rounding for complex-analytic functions;
    ``evaluate_complex(i, flat_index, h) -> derivatives`` does the evaluation."""
    out = []
    for i, x in enumerate(params):
        n = x.size
        per_chunk = max(1, chunk_bytes // max(1, 2 * x.nbytes))
        values = np.empty(n)
        for start in range(0, n, per_chunk):
            idx = np.arange(start, min(n, start + per_chunk))
            values[idx] = np.asarray(evaluate_complex(i, idx, COMPLEX_STEP)).reshape(-1)
        out.append(values.reshape(x.shape))
    return out


def gradient_directional(evaluate_grad, params: list, direction: list) -> tuple:
    """Finite differences of the *gradient* along one direction: a Hessian-vector product
    estimate, Richardson-extrapolated, with a per-element error estimate.

    ``evaluate_grad(point) -> list of arrays`` is the framework's gradient at a point (numpy).
    Returns (estimate, error), each a list over params.
    """
    h = _point_step(params)
    at = {t: evaluate_grad([p + t * d for p, d in zip(params, direction)]) for t in (h, -h, h / 2, -h / 2)}
    estimate, error = [], []
    for k in range(len(params)):
        magnitude = np.maximum.reduce([np.abs(at[t][k]) for t in at])
        est, truncation, rounding = _richardson(at[h][k], at[-h][k], at[h / 2][k], at[-h / 2][k], h, h / 2, magnitude)
        estimate.append(est)
        error.append(truncation + rounding)
    return estimate, error


def localise(evaluate_directions, evaluate_elementwise, params: list, f0: float, grads: list,
             fails, rng: np.random.Generator, block: int = 64) -> dict | None:
    """Find the worst element behind a failing directional check by bisection.

    Blocks start as whole parameters; each is probed along a random direction supported on it
    alone, ``fails(autodiff_projection, fd_estimate, fd_error) -> excess`` (> 1 is a failure)
    judges it, and the worst failing block is halved until it has at most ``block`` elements,
    which then get full per-element differences. Cost: O(log n) directional probes.
    Returns {param, flat_index, estimate, error, left, right, nondiff, probes} or None when no
    block fails on its own (errors that cancel across blocks are reported unlocalised).
    """
    shapes = [p.shape for p in params]
    flat_grads = [g.reshape(-1) for g in grads]
    candidates = [(i, 0, p.size) for i, p in enumerate(params) if p.size]
    probes = 0
    while True:
        worst, worst_excess = None, 1.0
        for i, lo, hi in candidates:
            direction = [np.zeros(s) for s in shapes]
            piece = rng.standard_normal(hi - lo)
            direction[i].reshape(-1)[lo:hi] = piece / np.linalg.norm(piece)
            est, err = directional(evaluate_directions, params, f0, [d[None] for d in direction])
            probes += 1
            projected = float(flat_grads[i][lo:hi] @ direction[i].reshape(-1)[lo:hi])
            excess = fails(projected, float(est[0]), float(err[0]))
            if excess > worst_excess:
                worst, worst_excess = (i, lo, hi), excess
        if worst is None:
            return None
        i, lo, hi = worst
        if hi - lo <= block:
            break
        mid = (lo + hi) // 2
        candidates = [(i, lo, mid), (i, mid, hi)]
    idx = np.arange(lo, hi)
    est, err, left, right, nondiff = _stencil(evaluate_elementwise, i, params[i].reshape(-1), idx, f0, 4 * idx.size)
    return {"param": i, "flat_index": idx, "estimate": est, "error": err, "left": left, "right": right,
            "nondiff": nondiff, "probes": probes}


# ---- noise of the function itself (Moré & Wild's ECnoise) -----------------------------------------
#: relative spacing of the noise probe's points: far above float64 rounding, far below any
#: curvature that a sixth difference could see (its smooth part is ~(8 * NOISE_STEP)**6)
NOISE_STEP = 1e-7
NOISE_POINTS = 10


def noise_level(evaluate_directions, params: list, rng: np.random.Generator) -> float:
    """The standard deviation of f's rounding noise along a short ray from the point, or NaN
    where the values are not noise-like.

    f is evaluated at x + k * NOISE_STEP * d (k = 1..NOISE_POINTS, d_i = +-max(|x_i|, 1e-3): a
    relative move per element); the k-th differences of pure noise of deviation s have deviation
    s / sqrt(gamma_k), gamma_k = (k!)^2 / (2k)!. As in Moré & Wild's ECnoise, the estimate is
    accepted only where the fifth and sixth differences both change sign and agree within a
    factor of 4: a function that is merely steep there (log near 0) has differences of one sign
    that grow with the order, and gives NaN, not a noise level. The point itself (k = 0) is left
    out, so a kink or a jump exactly there (a tie, a clip bound) adds nothing. A function
    computed in float64 shows ~1e-16 of its scale; one computed through float32 ~1e-8.
    """
    from math import factorial

    dirs = [np.sign(rng.standard_normal(p.shape)) * np.maximum(np.abs(p), 1e-3) for p in params]
    steps = NOISE_STEP * np.arange(1, NOISE_POINTS + 1, dtype=np.float64)
    values = np.asarray(evaluate_directions([np.repeat(d[None], NOISE_POINTS, axis=0) for d in dirs], steps),
                        dtype=np.float64)
    if not np.isfinite(values).all():
        return float("nan")
    sigma = {}
    for k in (5, 6):
        diff = np.diff(values, n=k)
        if not (diff.max() > 0 > diff.min()) and np.any(diff):
            return float("nan")
        sigma[k] = float(np.sqrt(factorial(k) ** 2 / factorial(2 * k) * np.mean(diff ** 2)))
    if sigma[6] == 0.0:
        return 0.0
    return sigma[6] if 0.25 <= sigma[5] / sigma[6] <= 4.0 else float("nan")


__all__ = ["BASE_STEP", "CENTRAL_STEP", "CHUNK_BYTES", "COMPLEX_STEP", "EPS64", "KINK_RTOL", "NOISE_POINTS",
           "NOISE_STEP", "UNRELIABLE_RTOL", "complex_step", "directional", "FDResult", "full",
           "gradient_directional", "localise", "noise_level", "random_directions", "steps_for"]
