"""Verdicts: every observation held against finite differences, its own forward mode, the
float64 reference and the other frameworks. Framework-free; sees all frameworks at once.

build_records is the judge's one entry: each observation's own checks (harness/judge/
own_checks.py), each against its float64 reference and eager twin, each pair of frameworks in
one setting (here), then causes (causes.py) and the completeness invariant (coverage.py). The
checks and what each compares are harness.vocab.CHECKS; arrays are compared by arrays.py.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from harness.judge import coverage
from harness.judge.arrays import compare_arrays, continuous_kinks, symmetric_agreement
from harness.judge.causes import label
from harness.judge.layers import layer_records
from harness.judge.own_checks import base_record, kink_message, make_record, own_checks
from harness.judge.observation import Observation
from harness.judge.tolerance import Tolerance, lookup
from harness.plan.tasks import is_reference
from harness.vocab import task_key


def build_records(rows: list, cases: dict, arrays) -> list:
    """All check records for a run's observations. ``cases`` maps name -> Case (for tolerances
    and tags); a case no longer loadable is judged with the default tables. ``arrays``: the
    rows' arrays, a folder or a mapping in memory, as Observation takes them."""
    observations = [Observation(r, arrays) for r in rows]
    records = []
    by_key = {o.key: o for o in observations}
    reference_task = {(o.case, o.framework): o for o in observations if is_reference(o)}
    for o in observations:
        overrides = getattr(cases.get(o.case), "tolerance", None)
        if not o.ok:
            rec = base_record(o, "run", "*")
            rec.update(verdict=o.row.get("status", "error"), cause=o.row.get("cause"), message=o.row.get("reason", ""),
                       traceback=o.row.get("traceback", ""))
            records.append(rec)
            continue
        records += own_checks(o, overrides)
        if not is_reference(o):
            records += _against_twin(o, reference_task.get((o.case, o.framework)), "reference", overrides,
                                     "the float64 reference task has no observation")
        if o.mode == "compiled":
            eager = by_key.get(task_key({**o.row, "mode": "eager"}))
            if eager is not None:
                records += _against_twin(o, eager, "compiled", overrides)
    records += _pair_checks(observations, cases, {k: o for k, o in reference_task.items() if o.ok})
    label(records, observations, cases)
    records += layer_records(observations, cases, records)
    return records + coverage.gap_records(records, rows, cases)


def _against_twin(o: Observation, twin, check: str, overrides, missing: str = "") -> list:
    """``o`` against the same framework's other task (its float64 reference, or its eager
    twin for ``compiled``); ``missing``: the reason when that task has no observation."""
    if twin is None:
        return [_unobserved(o, check, missing)]
    if not twin.ok:
        return [_not_compared(o, twin, check)]
    return (_inputs_differ(o, twin, (check,))
            or _against(o, twin, check, lookup(o.dtype, overrides), fd_refs=[twin] if check == "reference" else ()))


def _pair_checks(observations: list, cases: dict, reference_of: dict) -> list:
    """Framework vs framework at the same device, dtype, mode and precision: pairwise per
    parameter and forward, or why they could not be compared."""
    records = []
    groups: dict = {}
    for o in observations:
        groups.setdefault(task_key(o.row, drop=("framework",)), []).append(o)
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
    return records


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
            rec = base_record(o, check, param)
            rec.update(verdict="error", cause=None, message=why)
        else:
            kinks, left, right = _kinks(fd_refs, param, got[param].shape)
            comparison = compare_arrays(got[param], expected[param], tol, scale, kinks=kinks)
            rec = make_record(o, check, param, comparison, tol)
            if comparison.verdict == "nan" and comparison.nonfinite_at_kinks:
                rec["message"] = kink_message(rec, left, right, f"{o.framework} gives {comparison.got}, "
                                                                 f"{ref.framework} gives {comparison.expected}")
            elif comparison.verdict == "diverge" and symmetric_agreement(got[param], expected[param], tol, scale):
                rec["cause"] = "default-semantics"
                rec["message"] = (f"{o.framework} and {ref.framework} agree along symmetric perturbations only: they "
                                  "differ in the gradient convention for a symmetric matrix input")
            elif comparison.verdict == "diverge" and other is not None:
                _note_independence(rec, param, got[param], expected[param], o, ref)
        out.append(_counterpart(rec, ref, other))
    return out


def _note_independence(rec: dict, param: str, got, expected, o: Observation, ref: Observation) -> None:
    """A parameter whose gradient is identically zero in one framework and not in the other:
    there the loss does not depend on it (a port that never uses the weight, a mistyped name
    that left the module's own value in place). Recorded as ``independent_in``; causes.py names
    it once an autodiff bug (the framework's own FD disagreeing) and a kink (a zero subgradient is
    a convention there) are ruled out."""
    zero_got, zero_expected = not np.any(got), not np.any(expected)
    if zero_got == zero_expected:
        return
    zero, nonzero = (o, ref) if zero_got else (ref, o)
    rec["independent_in"] = zero.framework
    rec["message"] = (f"the loss does not depend on {param!r} in {zero.framework}: its gradient is identically 0 "
                      f"there and not in {nonzero.framework} (a parameter the port never uses, or a name that "
                      f"does not reach the model)")


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
        rec = base_record(a, "forward", "*")
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
    rec = _counterpart(make_record(a, "forward", "*", comparison, tol,
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
        rec = base_record(o, check, "*")
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
    rec = base_record(o, check, "*")
    rec.update(verdict="skipped", cause=None, message=f"not compared: {why}")
    if other is not None or counterpart is not None:
        _counterpart(rec, counterpart, other)
    return rec


__all__ = ["build_records"]
