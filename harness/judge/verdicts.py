"""Verdicts: every observation held against finite differences, its own forward mode, the
float64 reference and the other frameworks. Framework-free; sees all frameworks at once.

Checks (the ``check`` field of a record):
  run          a task that could not run: error or skipped, with the reason
  fd           reverse-mode gradient vs finite differences (float64, CPU, eager)
  jvp          forward-mode JVP along a random direction vs <reverse-mode gradient, direction>
  hvp          Hessian-vector products (each method) vs finite differences of the gradient
  complex      reverse-mode gradient vs the complex-step derivative (with --fd complex)
  determinism  the same gradient computed twice
  reference    a gradient at another dtype/device/mode vs the same framework's float64 reference
  compiled     a compiled gradient vs the eager one at the same dtype, device and precision
  pairwise     framework vs framework at the same device, dtype, mode and precision
  forward      the two frameworks' forward values (the loss) in each pairwise setting
  timing       forward and forward+backward times (param = the phase); always `pass` when measured
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import functools

import numpy as np

from harness.judge import coverage
from harness.judge.causes import CAUSES, label  # noqa: F401 - CAUSES re-exported: the verdicts' vocabulary
from harness.plan.tasks import is_reference
from harness.worker.timing import record_fields
from harness.judge.tolerance import Tolerance, gradient_norm, gradient_scale, lookup


#: same computation twice may differ by this much (relative to the gradient's scale) before it
#: counts as nondeterministic: 0 on CPU, where every framework here is bitwise reproducible
NONDET_RTOL = {"cpu": 0.0}
NONDET_RTOL_ACCELERATOR = 1e-6


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


def _index(flat_index: int, shape) -> list:
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
        worst_index=_index(worst, shape), got=float(g[worst]) if g.size else None,
        expected=float(e[worst]) if e.size else None, elements=int(g.size), bad_elements=int(bad.sum()),
        nondiff_elements=nd_count, outside_hull=hull_bad, nonfinite_side=side, nonfinite_at_kinks=at_kinks,
        fd_err=float(np.asarray(fd_error).reshape(-1)[worst]) if fd_error is not None and g.size else None)


class Observation:
    """One task's answer as the parent sees it, with its arrays loaded on demand."""

    def __init__(self, row: dict, arrays_dir):
        self.row = row
        self._arrays_dir = arrays_dir
        self._arrays = None

    def __getattr__(self, key):
        try:
            return self.row[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def ok(self) -> bool:
        return self.row.get("status") == "ok"

    @property
    def key(self) -> tuple:
        return (self.case, self.framework, self.device, self.dtype, self.mode, self.precision)

    def arrays(self, prefix: str) -> dict:
        if self._arrays is None:
            name = self.row.get("arrays")
            self._arrays = dict(np.load(self._arrays_dir / name, allow_pickle=False)) if name else {}
        return {k.split("/", 1)[1]: v for k, v in self._arrays.items() if k.startswith(prefix + "/")}

    @functools.cached_property
    def grads(self) -> dict:
        return self.arrays("grad")

    @functools.cached_property
    def grad_scale(self) -> float:
        return gradient_scale(self.grads)

    @property
    def reduced_precision(self) -> bool:
        return bool((self.row.get("policy") or {}).get("reduced_precision_float32")) and self.dtype == "float32"


def _base_record(obs: Observation, check: str, param: str) -> dict:
    return {
        "case": obs.case, "framework": obs.framework, "framework_version": obs.row.get("version"),
        "device": obs.device, "device_name": obs.row.get("device_name"), "dtype": obs.dtype,
        "mode": obs.mode, "precision": obs.precision, "check": check, "param": param,
        "policy": obs.row.get("policy") or {},
    }


def _record(obs, check, param, comparison: Comparison, tol: Tolerance, **extra) -> dict:
    rec = _base_record(obs, check, param)
    rec.update(verdict=comparison.verdict, cause=None, max_abs_err=comparison.max_abs_err,
               max_rel_err=comparison.max_rel_err, worst_index=comparison.worst_index,
               got=comparison.got, expected=comparison.expected, atol=tol.atol, rtol=tol.rtol,
               elements=comparison.elements, bad_elements=comparison.bad_elements,
               nondiff_elements=comparison.nondiff_elements, fd_err=comparison.fd_err, message="")
    rec.update(extra)
    if comparison.verdict == "nan":
        # NaN where the function has a kink is a convention (a subgradient vs NaN), not propagation
        rec["cause"] = "nondiff-convention" if comparison.nonfinite_at_kinks else "nan-propagation"
    return rec


def _kink_message(rec: dict, left, right, who: str) -> str:
    """What each side chose at a non-differentiable element, beside its one-sided limits."""
    where = tuple(rec["worst_index"]) if rec["worst_index"] else ()
    limits = f"one-sided limits {float(np.asarray(left)[where]):.6g} and {float(np.asarray(right)[where]):.6g}"
    return f"not differentiable at {list(where)} ({limits}): {who}"


def build_records(rows: list, cases: dict, arrays_dir) -> list:
    """All check records for a run's observations. ``cases`` maps name -> Case (for tolerances
    and tags); a case no longer loadable is judged with the default tables."""
    observations = [Observation(r, arrays_dir) for r in rows]
    records = []
    by_key = {o.key: o for o in observations}
    reference_task = {(o.case, o.framework): o for o in observations if is_reference(o)}
    reference_of = {k: o for k, o in reference_task.items() if o.ok}
    for o in observations:
        case = cases.get(o.case)
        overrides = getattr(case, "tolerance", None)
        if not o.ok:
            rec = _base_record(o, "run", "*")
            rec.update(verdict=o.row.get("status", "error"), cause=o.row.get("cause"), message=o.row.get("reason", ""),
                       traceback=o.row.get("traceback", ""))
            records.append(rec)
            continue
        records += _determinism(o)
        if o.row.get("timing") and not _stage_failed(o, "timing", records):
            records += _timing(o)
        if not _stage_failed(o, "jvp", records):
            records += _jvp(o, lookup(o.dtype, overrides))
        if o.row.get("fd") and not _stage_failed(o, "fd", records):
            records += _fd(o, lookup("float64", overrides, key="fd"))
            records += _complex(o, lookup("float64", overrides), lookup("float64", overrides, key="fd"))
        if o.row.get("hvp") and not _stage_failed(o, "hvp", records):
            records += _hvp(o, lookup("float64", overrides, key="fd"))
        ref = reference_task.get((o.case, o.framework))
        if not is_reference(o):
            if ref is None:
                records.append(_unobserved(o, "reference", "the float64 reference task has no observation"))
            elif ref.ok:
                records += (_inputs_differ(o, ref, ("reference",))
                            or _against(o, ref, "reference", lookup(o.dtype, overrides), fd_refs=[ref]))
            else:
                records.append(_not_compared(o, ref, "reference"))
        eager = by_key.get((o.case, o.framework, o.device, o.dtype, "eager", o.precision))
        if o.mode == "compiled" and eager is not None:
            if eager.ok:
                records += (_inputs_differ(o, eager, ("compiled",))
                            or _against(o, eager, "compiled", lookup(o.dtype, overrides)))
            else:
                records.append(_not_compared(o, eager, "compiled"))
    # framework vs framework at the same device, dtype, mode and precision
    groups: dict = {}
    for o in observations:
        groups.setdefault((o.case, o.device, o.dtype, o.mode, o.precision), []).append(o)
    for members in groups.values():
        members.sort(key=lambda o: o.framework)
        for a, b in combinations(members, 2):
            if a.ok and b.ok:
                differ = _inputs_differ(a, b, ("pairwise", "forward"), other=b)
                if differ:
                    records += differ
                    continue
                overrides = getattr(cases.get(a.case), "tolerance", None)
                refs = [r for r in (reference_of.get((a.case, a.framework)), reference_of.get((b.case, b.framework))) if r]
                records += _against(a, b, "pairwise", lookup(a.dtype, overrides), other=b, fd_refs=refs)
                records.append(_forward(a, b, lookup(a.dtype, overrides), refs))
            elif a.ok or b.ok:
                failed = b if a.ok else a
                records += [_not_compared(a, failed, check, other=b) for check in ("pairwise", "forward")]
    label(records, observations, cases)
    return records + coverage.gap_records(records, rows, cases)


def _stage_failed(o: Observation, stage: str, records: list) -> bool:
    """A check that could not run in the worker becomes its own skipped/error record."""
    info = o.row.get(stage)
    if not isinstance(info, dict) or info.get("status") not in ("skipped", "error"):
        return False
    rec = _base_record(o, stage, "*")
    rec.update(verdict=info["status"], cause=info.get("cause"), message=info.get("reason", ""))
    records.append(rec)
    return True


def _timing(o: Observation) -> list:
    """Timing records: not verdicts on correctness (always `pass` when measured), but the
    measurements the report and `compare` read: raw per-call times, median, IQR, first call."""
    out = []
    for phase in ("forward", "forward+backward"):
        m = o.row["timing"][phase]
        rec = _base_record(o, "timing", phase)
        rec.update(verdict="pass", cause=None, median_s=m["median"], iqr_s=m["iqr"], noisy=m["noisy"],
                   first_call_s=m["first_call"], block=m["block"], times=m["times"],
                   sync_overhead_s=m.get("overhead"),
                   timing_preset=o.row["timing"]["preset"], threads=(o.row.get("policy") or {}).get("threads"),
                   message="noisy: IQR > 10% of median" if m["noisy"] else "")
        rec.update(record_fields(m, o.row["timing"]))   # contended, load, calibration (harness.worker.timing)
        out.append(rec)
    return out


def _determinism(o: Observation) -> list:
    if "nondeterminism" not in o.row:
        return []
    scale = o.grad_scale
    rtol = NONDET_RTOL.get(o.device, NONDET_RTOL_ACCELERATOR)
    diff = float(o.nondeterminism)
    verdict = "pass" if diff <= rtol * scale else "diverge"
    rec = _base_record(o, "determinism", "*")
    rec.update(verdict=verdict, cause="nondeterminism" if verdict != "pass" else None,
               max_abs_err=diff, max_rel_err=diff / scale, atol=rtol, rtol=0.0,
               message="" if verdict == "pass" else "two identical gradient computations differ")
    return [rec]


def _jvp(o: Observation, tol: Tolerance) -> list:
    j = o.row.get("jvp")
    if not j:
        return []
    comparison = compare_arrays(np.array([j["tangent"]]), np.array([j["expected"]]), tol, j["scale"] or 1.0)
    rec = _record(o, "jvp", "*", comparison, tol, message=j.get("kernels", ""))
    rec["worst_index"] = []
    if comparison.verdict == "diverge":
        if o.reduced_precision:
            rec["cause"] = "precision-policy"
            rec["message"] = "forward and reverse mode disagree at the rounding of a reduced-precision policy"
        else:
            rec["cause"] = "ad-bug"
            rec["message"] = "forward mode disagrees with reverse mode (the fd check says which is right)"
    return [rec]


def _fd(o: Observation, tol: Tolerance) -> list:
    grads, scale = o.grads, o.grad_scale
    info = o.row["fd"]
    if info.get("mode") == "directional":
        est = o.arrays("fd_directional")
        k = len(est["estimate"])
        got = np.array([sum(float(np.sum(grads[p] * d)) for p, d in o.arrays(f"fd_direction{i}").items())
                        for i in range(k)])
        norm = gradient_norm(grads.values())
        comparison = compare_arrays(got, est["estimate"], tol, norm or 1.0, fd_error=est["error"])
        rec = _record(o, "fd", "*", comparison, tol, fd_mode="directional",
                      message=f"{k} random directions")
        if comparison.verdict == "diverge":
            rec["cause"] = "ad-bug"
        local = o.arrays("fd_localised")
        if not local:
            if comparison.verdict == "diverge":
                rec["message"] += "; no single parameter block fails on its own (not localised)"
            return [rec]
        name = info["localised"]["param"]
        g = grads[name].reshape(-1)[local["index"]]
        found = compare_arrays(g, local["estimate"], tol, scale, fd_error=local["error"], nondiff=local["nondiff"],
                               left=local["left"], right=local["right"])
        worst_flat = int(local["index"][int(np.argmax(np.abs(g - local["estimate"])))])
        loc = _record(o, "fd", name, found, tol, fd_mode="directional+bisection",
                      message=f"localised by bisection in {info['localised']['probes']} probes")
        loc["worst_index"] = _index(worst_flat, grads[name].shape)
        if found.verdict == "diverge":
            loc["cause"] = "ad-bug"
        return [rec, loc]
    estimate, error = o.arrays("fd_estimate"), o.arrays("fd_error")
    left, right, nondiff = o.arrays("fd_left"), o.arrays("fd_right"), o.arrays("fd_nondiff")
    refined = o.arrays("fd_refined")
    out = []
    for param, g in grads.items():
        kinks = continuous_kinks(nondiff[param], left[param], right[param], scale)
        comparison = compare_arrays(g, estimate[param], tol, scale, fd_error=error[param],
                                    nondiff=nondiff[param], left=left[param], right=right[param], kinks=kinks)
        rec = _record(o, "fd", param, comparison, tol, fd_mode="full")
        if param in refined:
            rec["fd_refined"] = int(refined[param].sum())
        if comparison.nondiff_elements:
            rec["message"] = (f"{comparison.nondiff_elements} non-differentiable element(s) judged by "
                              f"one-sided limits")
        if comparison.verdict == "nan" and comparison.nonfinite_at_kinks:
            rec["message"] = _kink_message(rec, left[param], right[param], f"{o.framework} returns {comparison.got}")
        if comparison.verdict == "diverge":
            if comparison.outside_hull and comparison.outside_hull == comparison.bad_elements:
                rec["cause"] = "nondiff-convention"
                rec["message"] = "autodiff lies outside the one-sided limits at a non-differentiable point"
            elif symmetric_agreement(g, estimate[param], tol, scale, error[param]):
                rec["cause"] = "default-semantics"
                rec["message"] = (f"agrees with finite differences along symmetric perturbations only: {o.framework} "
                                  "treats this matrix as symmetric (its gradient convention for a symmetric input)")
            else:
                rec["cause"] = "ad-bug"
        out.append(rec)
    return out


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


def _complex(o: Observation, tol: Tolerance, fd_tol: Tolerance) -> list:
    """Autodiff vs the complex-step derivative (exact to rounding): held to the float64 table.

    The complex step is only a derivative where the framework's complex extension of the function
    is analytic; one that uses |z| or conj(z) (TF's squared_difference does) gives a wrong value.
    So the complex step must first agree with the independent finite-difference estimate, or it is
    skipped with that reason."""
    info = o.row["fd"].get("complex")
    if not info:
        return []
    grads, estimate = o.grads, o.arrays("complex_step")
    if info.get("status") == "ok":
        fd_estimate, fd_error = o.arrays("fd_estimate"), o.arrays("fd_error")
        fd_nondiff, fd_scale = o.arrays("fd_nondiff"), gradient_scale(fd_estimate)
        agree = all(compare_arrays(np.where(fd_nondiff[p], fd_estimate[p], estimate[p]), fd_estimate[p], fd_tol,
                                   fd_scale, fd_error=fd_error[p]).verdict == "pass"
                    for p in estimate)
        if not agree:
            info = {"status": "skipped", "reason": f"{o.framework}'s complex extension of this function is not "
                                                   "analytic (the complex step disagrees with finite differences)"}
    if info.get("status") != "ok":
        rec = _base_record(o, "complex", "*")
        rec.update(verdict=info.get("status", "error"), cause=None, message=info.get("reason", ""))
        return [rec]
    scale = o.grad_scale
    out = []
    for param, g in grads.items():
        comparison = compare_arrays(g, estimate[param], tol, scale)
        rec = _record(o, "complex", param, comparison, tol, message=f"complex step h={info['step']:g}")
        if comparison.verdict == "diverge":
            rec["cause"] = "ad-bug"
        out.append(rec)
    return out


def _hvp(o: Observation, tol: Tolerance) -> list:
    """Each HVP method vs finite differences of the gradient along the same direction."""
    info = o.row["hvp"]
    estimate, error = o.arrays("hvp_fd"), o.arrays("hvp_fd_error")
    scale = gradient_scale(estimate)
    out = []
    for method in info.get("methods", []):
        for param, hv in o.arrays(f"hvp_{method}").items():
            comparison = compare_arrays(hv, estimate[param], tol, scale, fd_error=error[param])
            rec = _record(o, "hvp", param, comparison, tol, method=method,
                          message=f"{method} Hessian-vector product vs FD of the gradient")
            if comparison.verdict == "diverge":
                rec["cause"] = "ad-bug"
            out.append(rec)
    for method, reason in info.get("skipped", {}).items():
        rec = _base_record(o, "hvp", "*")
        rec.update(verdict="skipped", cause=None, method=method, message=f"{method}: {reason}")
        out.append(rec)
    for method, failed in info.get("failed", {}).items():
        rec = _base_record(o, "hvp", "*")
        rec.update(verdict="error", cause=failed.get("cause"), method=method, message=f"{method}: {failed['reason']}",
                   **({"upstream": failed["upstream"]} if failed.get("upstream") else {}))
        out.append(rec)
    for rec in out:
        kernels = (info.get("kernels") or {}).get(rec.get("method"))
        if kernels and rec["verdict"] != "skipped":
            rec["message"] += f"; {kernels}"
    return out


def _against(o: Observation, ref: Observation, check: str, tol: Tolerance, other=None, fd_refs=()) -> list:
    """One record per parameter of either side; a parameter that cannot be compared (missing on
    one side, shapes or dtypes that differ) is an `error` record saying why, never dropped.
    ``fd_refs``: the reference observations whose finite differences say where the function has
    kinks (a NaN there is a convention)."""
    got, expected, scale = o.grads, ref.grads, ref.grad_scale
    out = []
    for param in list(got) + [p for p in expected if p not in got]:
        why = _incomparable(param, got.get(param), expected.get(param), o, ref)
        if why:
            rec = _base_record(o, check, param)
            rec.update(verdict="error", cause=None, message=why)
        else:
            kinks, left, right = _kinks(fd_refs, param, got[param].shape)
            comparison = compare_arrays(got[param], expected[param], tol, scale, kinks=kinks)
            rec = _record(o, check, param, comparison, tol)
            if comparison.verdict == "nan" and comparison.nonfinite_at_kinks:
                rec["message"] = _kink_message(rec, left, right, f"{o.framework} gives {comparison.got}, "
                                                                 f"{ref.framework} gives {comparison.expected}")
            elif comparison.verdict == "diverge" and symmetric_agreement(got[param], expected[param], tol, scale):
                rec["cause"] = "default-semantics"
                rec["message"] = (f"{o.framework} and {ref.framework} agree along symmetric perturbations only: they "
                                  "differ in the gradient convention for a symmetric matrix input")
        out.append(_counterpart(rec, ref, other))
    return out


def _kinks(fd_refs, param, shape) -> tuple:
    """(mask, left, right): elements any of ``fd_refs`` found non-differentiable, with the
    one-sided limits there; (None, None, None) where none has full finite differences."""
    mask = left = right = None
    for ref in fd_refs:
        nd = ref.arrays("fd_nondiff").get(param)
        if nd is None or nd.shape != tuple(shape):
            continue
        lo, hi = ref.arrays("fd_left")[param], ref.arrays("fd_right")[param]
        nd = continuous_kinks(nd, lo, hi, ref.grad_scale)
        if mask is None:
            mask, left, right = nd, lo.copy(), hi.copy()
        else:
            new = nd & ~mask
            left, right = np.where(new, lo, left), np.where(new, hi, right)
            mask = mask | nd
    return mask, left, right


def _incomparable(param, g, e, o, ref) -> str:
    """Why two gradients of ``param`` cannot be compared elementwise ('' when they can)."""
    def who(x):
        return f"{x.framework} {x.dtype} {x.mode}"
    if g is None or e is None:
        return f"cannot compare {param!r}: {who(o if g is None else ref)} has no gradient for it"
    if g.shape != e.shape:
        return f"cannot compare {param!r}: shapes {tuple(g.shape)} ({who(o)}) vs {tuple(e.shape)} ({who(ref)})"
    for x, a in ((o, g), (ref, e)):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)):
            return f"cannot compare {param!r}: {who(x)} gave a {a.dtype} gradient, not a floating-point one"
    return ""


def _counterpart(rec: dict, ref: Observation, other) -> dict:
    """Name what ``rec`` was held against: the other framework, or the reference setting."""
    if other is not None:
        rec.update(other_framework=other.framework, other_framework_version=other.row.get("version"),
                   other_policy=other.row.get("policy") or {})
    else:
        rec["reference"] = f"{ref.framework} {ref.dtype} {ref.device} {ref.mode}"
    return rec


def _forward(a: Observation, b: Observation, tol: Tolerance, references=()) -> dict:
    """The two frameworks' forward values (the loss) at the same point: if these differ, the
    frameworks compute different functions, whatever their gradients say. Below float64 the
    frameworks' own rounding (each value against its float64 reference's) is allowed on top
    of the dtype's tolerance: an ill-conditioned loss rounds far beyond it in float32."""
    if a.row.get("value") is None or b.row.get("value") is None:
        rec = _base_record(a, "forward", "*")
        rec.update(verdict="error", cause=None, message="cannot compare the forward values: "
                   f"{a.framework if a.row.get('value') is None else b.framework} recorded none")
        return _counterpart(rec, b, b)
    va, vb = float(a.row["value"]), float(b.row["value"])
    scale = max(abs(va) if np.isfinite(va) else 0.0, abs(vb) if np.isfinite(vb) else 0.0,
                float(a.row.get("value_scale") or 0.0), float(b.row.get("value_scale") or 0.0)) or 1.0
    rounding = None
    if a.dtype != "float64" and len(references) == 2:
        own = [abs(float(x.row["value"]) - float(r.row["value"])) for x, r in zip((a, b), references)
               if x.row.get("value") is not None and r.row.get("value") is not None]
        rounding = np.array([sum(own)]) if len(own) == 2 and np.isfinite(sum(own)) else None
    comparison = compare_arrays(np.array([va]), np.array([vb]), tol, scale, fd_error=rounding)
    rec = _counterpart(_record(a, "forward", "*", comparison, tol,
                               message=f"loss {va:.8g} ({a.framework}) vs {vb:.8g} ({b.framework})"), b, b)
    rec["worst_index"] = []
    return rec


def _inputs_differ(o: Observation, ref: Observation, checks, other=None) -> list:
    """`error` records for ``checks`` of ``o`` against ``ref`` when they differentiated at
    different points (their ``inputs_digest`` of what make built disagree), else []: comparing
    them would report a divergence that is not one. Rows without a digest are compared as before."""
    a, b = o.row.get("inputs_digest"), ref.row.get("inputs_digest")
    if not a or not b or a == b:
        return []
    why = (f"not compared: the inputs differ: {_setting(o)} made inputs {a[:12]}, {_setting(ref)} made {b[:12]} "
           "(digests of make's params and inputs); make must draw every value from its rng (a framework's own "
           "generator, e.g. torch.randn, is not seeded alike in every task)")
    out = []
    for check in checks:
        rec = _base_record(o, check, "*")
        rec.update(verdict="error", cause=None, message=why, inputs_digest=a, other_inputs_digest=b)
        out.append(_counterpart(rec, ref, other))
    return out


def _setting(x: Observation) -> str:
    return f"{x.framework} {x.dtype} {x.device} {x.mode}"


def _not_compared(o: Observation, failed: Observation, check: str, other=None) -> dict:
    """A check of ``o`` that needs a task that did not run (``failed``, which may be ``o`` itself
    in a pair): `skipped`, saying which task and why; that task's `run` record has its verdict."""
    status = failed.row.get("status", "error")
    reason = (failed.row.get("reason") or "").strip().splitlines()[:1]
    return _unobserved(o, check, f"the {failed.framework} {failed.dtype} {failed.device} {failed.mode} task "
                                 f"did not run ({status}{': ' + reason[0] if reason else ''})", failed, other)


def _unobserved(o: Observation, check: str, why: str, counterpart=None, other=None) -> dict:
    rec = _base_record(o, check, "*")
    rec.update(verdict="skipped", cause=None, message=f"not compared: {why}")
    if other is not None or counterpart is not None:
        _counterpart(rec, counterpart, other)
    return rec
