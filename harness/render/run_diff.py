"""`harness compare OLD NEW`: what changed between two runs, as markdown and an exit code.

Typical use: before/after a framework upgrade, a new GPU, a change to a model. Reported:

- **verdicts that flipped** (any check whose verdict differs: pass → diverge is a regression,
  diverge → pass a fix);
- **errors that moved** beyond tolerance: a check with the same verdict whose max relative error
  changed by more than its tolerance (atol + rtol, in units of the gradient scale);
- **gradients that moved** (when both runs kept observations and arrays): each task's gradient
  held against the old run's with the dtype's tolerance, so a change that every check still
  passes is seen too;
- **new and removed cases** (and checks added or removed within the cases both ran);
- **timings that got slower or faster beyond noise**, from the stored raw per-call times: a cell
  changes only when a two-sided Mann-Whitney U test rejects "same distribution" (p < alpha), the
  interquartile ranges do not overlap, and the medians differ by more than ``min_change``.

Two runs with the same seed on the same machine report no gradient change: CPU gradients are
bitwise reproducible. Timing noise alone reports nothing: all three conditions must hold.

Two runs whose cases were computed at different points (another seed, a case whose parameter
shapes or input digest changed) have no gradient, error or timing in common to hold against each
other: ``input_differences`` says why, and `compare` refuses them unless asked to compare
verdicts only (``verdicts_only``), so a changed seed cannot pass for a regression.

This module finds the changes (a Diff) and decides the exit code; harness.render.diff_report
writes the Diff as markdown.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from harness.errors import HarnessError
from harness.store.records import as_float
from harness.store.runs import Run
from harness.vocab import flip_rank, record_key, sortable, task_key

DEFAULT_ALPHA = 0.01
DEFAULT_MIN_CHANGE = 0.05
FAIL_ON_CHOICES = ("diverge", "change", "slowdown", "removed", "none")
#: compare's old spelling, still read (it never meant anything else); `run` and `compare` write ``diverge``
FAIL_ON_ALIASES = {"divergence": "diverge"}
#: the observation field holding a digest of a task's float64 params and inputs (where recorded)
INPUTS_DIGEST = "inputs_digest"


class DiffError(HarnessError, ValueError):
    """Bad usage of compare (an unknown --fail-on): one line, exit 2."""


# ---- statistics --------------------------------------------------------------------------------------
def mann_whitney_p(a, b) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation with tie and
    continuity corrections; fine from about five samples a side, which every timing has)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 1.0
    # ranks 1..n, ties sharing their average rank: a run of equal values ending at rank c
    # (cumulative count) and k long averages to c - (k - 1) / 2
    _, inverse, counts = np.unique(np.concatenate([a, b]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse.reshape(-1)]
    tie = float(np.sum(counts ** 3 - counts))
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    variance = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (abs(u1 - n1 * n2 / 2.0) - 0.5) / math.sqrt(variance)
    return float(min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2.0))))


def _quartiles(times) -> tuple:
    q1, med, q3 = np.percentile(np.asarray(times, dtype=np.float64), [25, 50, 75])
    return float(q1), float(med), float(q3)


# ---- keys --------------------------------------------------------------------------------------------
def _order(r) -> tuple:
    """A record's identity as a sort key (ties between equal changes broken by it)."""
    return sortable(record_key(r))


def _index(records) -> dict:
    return {record_key(r): r for r in records}


@dataclass
class Diff:
    old: Run
    new: Run
    cases_added: list = field(default_factory=list)
    cases_removed: list = field(default_factory=list)
    flipped: list = field(default_factory=list)          # (old record, new record)
    moved: list = field(default_factory=list)            # (old record, new record, change, allowed)
    gradients: list = field(default_factory=list)        # dicts, see _array_drift
    gradients_compared: int | None = None                # None: arrays not available in both runs
    gradients_note: str = ""
    checks_added: Counter = field(default_factory=Counter)     # (case, framework) -> count
    checks_removed: Counter = field(default_factory=Counter)
    slower: list = field(default_factory=list)           # dicts, see _timings
    faster: list = field(default_factory=list)
    timings_compared: int = 0
    timings_contended: int = 0                           # compared cells contended in either run: no verdict
    unchanged: int = 0
    alpha: float = DEFAULT_ALPHA
    min_change: float = DEFAULT_MIN_CHANGE
    #: only verdicts (and cases, checks) compared: no errors, gradient arrays or timings
    verdicts_only: bool = False
    inputs_differ: list = field(default_factory=list)    # input_differences(old, new)

    @property
    def regressions(self) -> list:
        return [(o, n) for o, n in self.flipped if self.got_worse(o, n)]

    @staticmethod
    def got_worse(old, new) -> bool:
        """Did the check's verdict get worse from ``old`` to ``new`` (its records; harness.vocab.flip_rank)?"""
        return flip_rank(new["verdict"]) < flip_rank(old["verdict"])

    def flips_worst_first(self) -> list:
        """``flipped``, the largest drop in flip_rank first (then by record): the order compare lists them in."""
        return sorted(self.flipped, key=lambda p: (flip_rank(p[1]["verdict"]) - flip_rank(p[0]["verdict"]),
                                                   _order(p[1])))

    def moves_largest_first(self) -> list:
        """``moved``, the largest change of max relative error first (then by record)."""
        return sorted(self.moved, key=lambda m: (-abs(m[2]), _order(m[1])))

    @property
    def gradient_changes(self) -> int:
        return len(self.flipped) + len(self.moved) + len(self.gradients)


def compare_runs(old: Run, new: Run, alpha: float = DEFAULT_ALPHA, min_change: float = DEFAULT_MIN_CHANGE,
                 arrays: bool = True, verdicts_only: bool = False) -> Diff:
    d = Diff(old=old, new=new, alpha=alpha, min_change=min_change, verdicts_only=verdicts_only,
             inputs_differ=input_differences(old, new))
    old_cases = {r["case"] for r in old.records}
    new_cases = {r["case"] for r in new.records}
    d.cases_added = sorted(new_cases - old_cases)
    d.cases_removed = sorted(old_cases - new_cases)
    common = old_cases & new_cases
    o_idx = _index(r for r in old.records if r["case"] in common)
    n_idx = _index(r for r in new.records if r["case"] in common)
    for key in sorted(set(o_idx) | set(n_idx)):
        o, n = o_idx.get(key), n_idx.get(key)
        if o is None:
            d.checks_added[(n["case"], n["framework"])] += 1
            continue
        if n is None:
            d.checks_removed[(o["case"], o["framework"])] += 1
            continue
        if o["check"] == "timing":
            continue
        if o["verdict"] != n["verdict"]:
            d.flipped.append((o, n))
            continue
        moved = None if verdicts_only else _error_moved(o, n)
        if moved is not None:
            d.moved.append((o, n) + moved)
        else:
            d.unchanged += 1
    if verdicts_only:
        d.gradients_note = "--verdicts-only (verdicts were compared)"
        return d
    if arrays:
        _array_drift(d, common)
    else:
        d.gradients_note = "--no-arrays (errors and verdicts were compared)"
    _timings(d, o_idx, n_idx)
    return d


def input_differences(old: Run, new: Run) -> list:
    """Why OLD and NEW did not compute their cases at the same points, one phrase per reason
    (empty: the same inputs as far as the runs tell): the seed, and per case the parameter shapes
    or the input digest of a task both runs made."""
    why = []
    so, sn = old.meta.get("seed"), new.meta.get("seed")
    if so is not None and sn is not None and so != sn:
        why.append(f"seed {so} vs {sn}")
    if not (old.has_observations() and new.has_observations()):
        return why
    old_rows = {task_key(r): r for r in old.observations() if r.get("status") == "ok"}
    changed = set()
    for r in new.observations():
        o = old_rows.get(task_key(r))
        if o is None or r.get("status") != "ok":
            continue
        shapes = o.get("params") is not None and r.get("params") is not None and o["params"] != r["params"]
        digests = o.get(INPUTS_DIGEST) and r.get(INPUTS_DIGEST) and o[INPUTS_DIGEST] != r[INPUTS_DIGEST]
        if shapes or digests:
            changed.add(r["case"])
    if changed:
        names = sorted(changed)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        why.append(f"other parameters or inputs in case(s) {shown}")
    return why


def _error_moved(o, n):
    """(change, allowed) when max_rel_err moved by more than the check's tolerance, else None."""
    a, b = as_float(o.get("max_rel_err")), as_float(n.get("max_rel_err"))
    if not isinstance(a, float) or not isinstance(b, float):
        return None
    if not (math.isfinite(a) and math.isfinite(b)):
        return None if (math.isnan(a) and math.isnan(b)) or a == b else (b - a, 0.0)
    atol, rtol = as_float(n.get("atol")), as_float(n.get("rtol"))
    if not isinstance(atol, float) or not isinstance(rtol, float):
        return None
    allowed = atol + rtol
    change = b - a
    return (change, allowed) if abs(change) > allowed else None


def _tolerance_records(records) -> dict:
    """(case, dtype) -> the first record showing the tolerance the run held that case's gradients
    to at that dtype (overrides included)."""
    found = {}
    for r in records:
        if r["check"] in ("reference", "pairwise", "compiled") and r.get("rtol") is not None:
            found.setdefault((r["case"], r.get("dtype")), r)
    return found


def _tolerance_for(found, case, dtype):
    """The tolerance of (case, dtype) in ``found`` (_tolerance_records), else the dtype's default."""
    from harness.judge.tolerance import DTYPE_TOLERANCE, Tolerance

    r = found.get((case, dtype))
    if r is not None:
        return Tolerance(rtol=float(r["rtol"]), atol=float(r["atol"]))
    return DTYPE_TOLERANCE.get(dtype, DTYPE_TOLERANCE["float32"])


def _array_drift(d: Diff, common) -> None:
    """Each task's gradients in NEW against the same task's in OLD (needs both runs' arrays)."""
    from harness.judge.arrays import compare_arrays
    from harness.judge.tolerance import gradient_scale

    if not (d.old.has_observations() and d.new.has_observations()):
        missing = [r.folder for r in (d.old, d.new) if not r.has_observations()]
        d.gradients_note = (f"no observations.jsonl + arrays/ in {', '.join(str(m) for m in missing)} "
                            f"(errors and verdicts were compared)")
        return

    old_rows = {task_key(r): r for r in d.old.observations() if r.get("status") == "ok" and r.get("arrays")}
    new_rows = {task_key(r): r for r in d.new.observations() if r.get("status") == "ok" and r.get("arrays")}
    tolerances = _tolerance_records(d.new.records)
    compared = 0
    for key in sorted(set(old_rows) & set(new_rows), key=lambda k: tuple(map(str, k))):
        if key[0] not in common:
            continue
        try:
            with np.load(d.old.arrays_dir / old_rows[key]["arrays"], allow_pickle=False) as f:
                old = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith("grad/")}
            with np.load(d.new.arrays_dir / new_rows[key]["arrays"], allow_pickle=False) as f:
                new = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith("grad/")}
        except (OSError, ValueError, KeyError):
            continue
        tol = _tolerance_for(tolerances, key[0], key[3])
        scale = gradient_scale(old) if old else 1.0
        for param in sorted(set(old) & set(new)):
            if old[param].shape != new[param].shape:
                d.gradients.append({"key": key, "param": param, "verdict": "shape",
                                    "note": f"shape {old[param].shape} → {new[param].shape}"})
                continue
            compared += 1
            c = compare_arrays(new[param], old[param], tol, scale)
            if c.verdict != "pass":
                d.gradients.append({"key": key, "param": param, "verdict": c.verdict, "max_rel": c.max_rel_err,
                                    "index": c.worst_index, "old": c.expected, "new": c.got, "tol": tol})
    d.gradients_compared = compared


def _timings(d: Diff, o_idx, n_idx) -> None:
    for key in sorted(set(o_idx) & set(n_idx)):
        o, n = o_idx[key], n_idx[key]
        if o["check"] != "timing" or not o.get("times") or not n.get("times"):
            continue
        d.timings_compared += 1
        # contended in either run (harness.worker.contention): its figures are not the machine's, so no verdict
        if o.get("contended") or n.get("contended"):
            d.timings_contended += 1
            continue
        oq, nq = _quartiles(o["times"]), _quartiles(n["times"])
        ratio = nq[1] / oq[1] if oq[1] > 0 else float("inf")
        p = mann_whitney_p(o["times"], n["times"])
        entry = {"old": o, "new": n, "ratio": ratio, "p": p, "old_q": oq, "new_q": nq}
        if p < d.alpha and abs(ratio - 1.0) > d.min_change:
            if ratio > 1 and nq[0] > oq[2]:
                d.slower.append(entry)
            elif ratio < 1 and nq[2] < oq[0]:
                d.faster.append(entry)
    d.slower.sort(key=lambda e: (-e["ratio"], _order(e["new"])))
    d.faster.sort(key=lambda e: (e["ratio"], _order(e["new"])))


# ---- exit code ------------------------------------------------------------------------------------------
def parse_fraction(text) -> float:
    """'10%' or '0.10' -> 0.10. A bare number is a fraction, so one of 1 or more ('10': 1000%?) is
    refused as ambiguous, as are negative and non-finite values: a typo cannot loosen a gate.
    Raises ValueError with the rest of a sentence that starts with the flag and its value."""
    t = str(text).strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError("is not a percentage or a fraction (e.g. 10% or 0.10)") from None
    if not math.isfinite(value):
        raise ValueError("is not finite: give a percentage or a fraction, e.g. 10% or 0.10")
    if value < 0:
        raise ValueError("is negative: give 0 or more, e.g. 10% or 0.10")
    if not t.endswith("%") and value >= 1:
        raise ValueError(f"is ambiguous: a bare number is a fraction ({t} would mean {value:.0%}); "
                         f"write {t}% or {value / 100:g}")
    return value


def parse_fail_on(text: str) -> dict:
    """'diverge,slowdown=10%' -> {'diverge': None, 'slowdown': 0.10}. Empty is an error, not `none`:
    an unset CI variable must not turn the gate off."""
    tokens = [t.strip() for t in (text or "").split(",")]
    if not any(tokens):
        raise DiffError(f"--fail-on {text!r} is empty: name what fails ({', '.join(FAIL_ON_CHOICES[:-1])}) "
                        f"or none")
    out = {}
    for token in tokens:
        if not token:
            raise DiffError(f"--fail-on {text!r}: an empty item between commas")
        name, sep, value = (part.strip() for part in token.partition("="))
        name = FAIL_ON_ALIASES.get(name, name)
        if name not in FAIL_ON_CHOICES:
            raise DiffError(f"--fail-on {token!r}: choose from {', '.join(FAIL_ON_CHOICES)} "
                            f"(slowdown takes a threshold, e.g. slowdown=10%)")
        if sep and name != "slowdown":
            raise DiffError(f"--fail-on {token!r}: only slowdown takes a value")
        if sep and not value:
            raise DiffError(f"--fail-on {token!r}: give the threshold, e.g. slowdown=10%")
        try:
            out[name] = parse_fraction(value) if value else None
        except ValueError as exc:
            raise DiffError(f"--fail-on {token!r} {exc}") from None
    if "none" in out and len(out) > 1:
        raise DiffError(f"--fail-on {text!r}: none cannot be combined with anything else")
    return out


def failures(d: Diff, fail_on: dict) -> list:
    """Why the exit code is 1 (empty: 0)."""
    why = []
    if "none" in fail_on:
        return why
    if "diverge" in fail_on:
        n = len(d.regressions) + len(d.moved) + len(d.gradients)
        if n:
            why.append(f"diverge: {len(d.regressions)} verdict(s) got worse, {len(d.moved)} error(s) and "
                       f"{len(d.gradients)} gradient(s) moved beyond tolerance")
    if "change" in fail_on and (d.flipped or d.moved or d.gradients):
        why.append(f"change: {d.gradient_changes} gradient change(s)")
    if "slowdown" in fail_on:
        threshold = fail_on["slowdown"] if fail_on["slowdown"] is not None else d.min_change
        slow = [e for e in d.slower if e["ratio"] - 1.0 > threshold]
        if slow:
            why.append(f"slowdown: {len(slow)} timing(s) slower by more than {threshold:.0%}")
    if "removed" in fail_on and (d.cases_removed or d.checks_removed):
        why.append(f"removed: {len(d.cases_removed)} case(s), {sum(d.checks_removed.values())} check(s)")
    return why


__all__ = ["DEFAULT_ALPHA", "DEFAULT_MIN_CHANGE", "FAIL_ON_ALIASES", "FAIL_ON_CHOICES", "INPUTS_DIGEST",
           "Diff", "DiffError", "compare_runs", "failures", "input_differences", "mann_whitney_p", "parse_fail_on",
           "parse_fraction"]
