"""The checks an observation makes on its own: determinism, timing, its forward mode (JVP),
and on the float64 reference task finite differences, the complex step and HVPs; and the record
every check builds on (base_record, make_record)."""
from __future__ import annotations

import numpy as np

from harness.judge.arrays import Comparison, compare_arrays, continuous_kinks, element_index, symmetric_agreement
from harness.judge.observation import Observation
from harness.judge.timing_records import record_fields
from harness.judge.tolerance import Tolerance, gradient_norm, gradient_scale, lookup


#: same computation twice may differ by this much (relative to the gradient's scale) before it
#: counts as nondeterministic: 0 on CPU, where every framework here is bitwise reproducible
NONDET_RTOL = {"cpu": 0.0}
NONDET_RTOL_ACCELERATOR = 1e-6


def base_record(obs: Observation, check: str, param: str) -> dict:
    """The fields every record of ``obs`` carries: its task, the check and the parameter."""
    return {
        "case": obs.case, "framework": obs.framework, "framework_version": obs.row.get("version"),
        "device": obs.device, "device_name": obs.row.get("device_name"), "dtype": obs.dtype,
        "mode": obs.mode, "precision": obs.precision, "check": check, "param": param,
        "policy": obs.row.get("policy") or {},
    }


def make_record(obs, check, param, comparison: Comparison, tol: Tolerance, **extra) -> dict:
    """The record of one array comparison; a NaN on one side named by where it sits."""
    rec = base_record(obs, check, param)
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


def kink_message(rec: dict, left, right, who: str) -> str:
    """What each side chose at a non-differentiable element, beside its one-sided limits."""
    where = tuple(rec["worst_index"]) if rec["worst_index"] else ()
    limits = f"one-sided limits {float(np.asarray(left)[where]):.6g} and {float(np.asarray(right)[where]):.6g}"
    return f"not differentiable at {list(where)} ({limits}): {who}"


def own_checks(o: Observation, overrides) -> list:
    """The checks of one observation on its own: determinism, timing, JVP, and on the
    reference task FD, complex step and HVPs (a stage the worker could not run is its own
    record: _stage_failed)."""
    out = _determinism(o)
    if o.row.get("timing") and not _stage_failed(o, "timing", out):
        out += _timing(o)
    if not _stage_failed(o, "jvp", out):
        out += _jvp(o, lookup(o.dtype, overrides))
    if o.row.get("fd") and not _stage_failed(o, "fd", out):
        out += _fd(o, lookup("float64", overrides, key="fd"))
        out += _complex(o, lookup("float64", overrides), lookup("float64", overrides, key="fd"))
    if o.row.get("hvp") and not _stage_failed(o, "hvp", out):
        out += _hvp(o, lookup("float64", overrides, key="fd"))
    return out


def _stage_failed(o: Observation, stage: str, records: list) -> bool:
    """A check that could not run in the worker becomes its own skipped/error record."""
    info = o.row.get(stage)
    if not isinstance(info, dict) or info.get("status") not in ("skipped", "error"):
        return False
    rec = base_record(o, stage, "*")
    rec.update(verdict=info["status"], cause=info.get("cause"), message=info.get("reason", ""))
    records.append(rec)
    return True


def _timing(o: Observation) -> list:
    """Timing records: not verdicts on correctness (always `pass` when measured), but the
    measurements the report and `compare` read: raw per-call times, median, IQR, first call."""
    out = []
    for phase in ("forward", "forward+backward"):
        m = o.row["timing"][phase]
        rec = base_record(o, "timing", phase)
        rec.update(verdict="pass", cause=None, median_s=m["median"], iqr_s=m["iqr"], noisy=m["noisy"],
                   first_call_s=m["first_call"], block=m["block"], times=m["times"],
                   sync_overhead_s=m.get("overhead"),
                   timing_preset=o.row["timing"]["preset"], threads=(o.row.get("policy") or {}).get("threads"),
                   message="noisy: IQR > 10% of median" if m["noisy"] else "")
        rec.update(record_fields(m, o.row["timing"]))   # contended, load, calibration (harness.judge.timing_records)
        out.append(rec)
    return out


def _determinism(o: Observation) -> list:
    if "nondeterminism" not in o.row:
        return []
    scale = o.grad_scale
    rtol = NONDET_RTOL.get(o.device, NONDET_RTOL_ACCELERATOR)
    diff = float(o.nondeterminism)
    verdict = "pass" if diff <= rtol * scale else "diverge"
    rec = base_record(o, "determinism", "*")
    rec.update(verdict=verdict, cause="nondeterminism" if verdict != "pass" else None,
               max_abs_err=diff, max_rel_err=diff / scale, atol=rtol, rtol=0.0,
               message="" if verdict == "pass" else "two identical gradient computations differ")
    return [rec]


def _jvp(o: Observation, tol: Tolerance) -> list:
    j = o.row.get("jvp")
    if not j:
        return []
    comparison = compare_arrays(np.array([j["tangent"]]), np.array([j["expected"]]), tol, j["scale"] or 1.0)
    rec = make_record(o, "jvp", "*", comparison, tol, message=j.get("kernels", ""))
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
        rec = make_record(o, "fd", "*", comparison, tol, fd_mode="directional",
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
                               left=local["left"], right=local["right"],
                               kinks=continuous_kinks(local["nondiff"], local["left"], local["right"], scale))
        worst_flat = int(local["index"][int(np.argmax(np.abs(g - local["estimate"])))])
        loc = make_record(o, "fd", name, found, tol, fd_mode="directional+bisection",
                      message=f"localised by bisection in {info['localised']['probes']} probes")
        loc["worst_index"] = element_index(worst_flat, grads[name].shape)
        if found.verdict == "diverge":
            _fd_cause(loc, found, o.framework, g, local["estimate"], local["error"], tol, scale)
            if loc["cause"] == "nondiff-convention" and comparison.verdict == "diverge":
                # the failing directions are explained by the block they were localised to
                rec["cause"] = "nondiff-convention"
                rec["message"] += f"; they cross a non-differentiable point of {name} (localised)"
        return [rec, loc]
    estimate, error = o.arrays("fd_estimate"), o.arrays("fd_error")
    left, right, nondiff = o.arrays("fd_left"), o.arrays("fd_right"), o.arrays("fd_nondiff")
    refined = o.arrays("fd_refined")
    out = []
    for param, g in grads.items():
        kinks = continuous_kinks(nondiff[param], left[param], right[param], scale)
        comparison = compare_arrays(g, estimate[param], tol, scale, fd_error=error[param],
                                    nondiff=nondiff[param], left=left[param], right=right[param], kinks=kinks)
        rec = make_record(o, "fd", param, comparison, tol, fd_mode="full")
        if param in refined:
            rec["fd_refined"] = int(refined[param].sum())
        if comparison.nondiff_elements:
            rec["message"] = (f"{comparison.nondiff_elements} non-differentiable element(s) judged by "
                              f"one-sided limits")
        if comparison.verdict == "nan" and comparison.nonfinite_at_kinks:
            rec["message"] = kink_message(rec, left[param], right[param], f"{o.framework} returns {comparison.got}")
        if comparison.verdict == "diverge":
            _fd_cause(rec, comparison, o.framework, g, estimate[param], error[param], tol, scale)
        out.append(rec)
    return out


def _fd_cause(rec: dict, comparison, framework: str, got, estimate, error, tol: Tolerance, scale: float) -> None:
    """Why autodiff fails its finite differences, from the comparison alone: only at elements
    finite differences found non-differentiable (a convention there), only off the symmetric
    directions (a symmetric-input convention), or an autodiff bug."""
    if comparison.outside_hull and comparison.outside_hull == comparison.bad_elements:
        rec["cause"] = "nondiff-convention"
        rec["message"] = "autodiff lies outside the one-sided limits at a non-differentiable point"
    elif symmetric_agreement(got, estimate, tol, scale, error):
        rec["cause"] = "default-semantics"
        rec["message"] = (f"agrees with finite differences along symmetric perturbations only: {framework} "
                          "treats this matrix as symmetric (its gradient convention for a symmetric input)")
    else:
        rec["cause"] = "ad-bug"


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
        rec = base_record(o, "complex", "*")
        rec.update(verdict=info.get("status", "error"), cause=None, message=info.get("reason", ""))
        return [rec]
    scale = o.grad_scale
    out = []
    for param, g in grads.items():
        comparison = compare_arrays(g, estimate[param], tol, scale)
        rec = make_record(o, "complex", param, comparison, tol, message=f"complex step h={info['step']:g}")
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
            rec = make_record(o, "hvp", param, comparison, tol, method=method,
                          message=f"{method} Hessian-vector product vs FD of the gradient")
            if comparison.verdict == "diverge":
                rec["cause"] = "ad-bug"
            out.append(rec)
    for method, reason in info.get("skipped", {}).items():
        rec = base_record(o, "hvp", "*")
        rec.update(verdict="skipped", cause=None, method=method, message=f"{method}: {reason}")
        out.append(rec)
    for method, failed in info.get("failed", {}).items():
        rec = base_record(o, "hvp", "*")
        rec.update(verdict="error", cause=failed.get("cause"), method=method, message=f"{method}: {failed['reason']}",
                   **({"upstream": failed["upstream"]} if failed.get("upstream") else {}))
        out.append(rec)
    for rec in out:
        kernels = (info.get("kernels") or {}).get(rec.get("method"))
        if kernels and rec["verdict"] != "skipped":
            rec["message"] += f"; {kernels}"
    return out


__all__ = ["NONDET_RTOL", "NONDET_RTOL_ACCELERATOR", "base_record", "kink_message", "make_record", "own_checks"]
