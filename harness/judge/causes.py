"""Causes: why a failing record fails, named from the evidence a run already holds.

harness/judge/verdicts.py makes the verdicts; this names their causes, in this order of evidence:
  ad-bug              a framework's own autodiff fails its finite-difference check (smooth point)
  nondiff-convention  the difference sits at elements finite differences found non-differentiable
  precision-policy    float32 work under a reduced-precision policy (TF32, bf16 passes)
  precision-loss      a float64 result accurate only to about float32 precision: the framework's
                      float64 evaluation is noisy at float32 level (its reference's noise probe), or
                      it is the lone outlier of three or more frameworks that otherwise agree
                      (N-version), or two frameworks differ by a float32-sized amount
  default-semantics   the case is declared to compare differing native defaults
  different-function  both frameworks pass their own FD check but their forward values differ
Framework-free; sees every framework's observations at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.plan.tasks import is_reference
from harness.vocab import record_key


#: a float64 evaluation whose rounding noise (relative to the loss and the terms it sums) exceeds
#: this was computed through float32: float64 shows <= 2e-13 on every library case, float32 >= 2e-9
NOISE_FLOAT32 = 1e-11
#: the float32 tier of a float64 difference (relative to the gradient's scale): above rounding in
#: float64 (<= 1e-13 here between agreeing frameworks), at or below what one float32 rounding
#: of a constant or an intermediate moves a result (float32's epsilon is 1.2e-7)
TIER_FLOOR, TIER_CEILING = 1e-10, 1e-6
#: an N-version outlier is this many times further from every other framework than they are
#: from each other
OUTLIER_RATIO = 1000.0
#: frameworks that agree to this (relative to the scale) agree to float64 rounding
AGREE_FLOAT64 = 1e-14
#: a float64 evaluation this clean (measured noise relative to its scale) rounds only in float64
CLEAN_NOISE = 1e-14
#: a noisy evaluation explains a failed fd/jvp/hvp check up to this relative error
NOISE_EXPLAINS = 1e-2


def label(records: list, observations: list, cases: dict) -> None:
    """Name a cause for each failing record where the evidence allows (in place)."""
    ev = _evidence(records, observations, cases)
    for rec in records:
        _symmetric_input(rec, ev)
        _device_precision_loss(rec, ev)
        # a cause already established (ad-bug, nondiff-convention, nondeterminism, nan-propagation,
        # framework-error, custom-gradient: each given where its evidence is) stands
        if rec["verdict"] in ("diverge", "nan") and not rec.get("cause"):
            _name_cause(rec, ev)
    _confirm_policy(records)


@dataclass
class _Evidence:
    """What a run holds about its frameworks, gathered once for every record's cause."""
    cases: dict
    reference_of: dict    # (case, framework) -> its float64 reference observation
    noisy: dict           # (case, framework) -> float64 rounding noise at float32 level
    outliers: dict        # N-version outliers (_flag_outliers)
    fd_failed: set        # (case, framework) whose own fd check found an autodiff bug
    fd_made: set          # (case, framework) whose own fd check was made
    symmetric: set        # (case, framework) whose fd differs only by the symmetric-matrix convention
    lossy: set            # _lossy_references
    forward: dict         # pair key -> the pair's forward record
    off_reference: set    # one gradient off its own float64 reference
    cpu_pass: set         # record keys (device left out) of the checks that pass on the CPU


def _evidence(records: list, observations: list, cases: dict) -> _Evidence:
    reference_of = {(o.case, o.framework): o for o in observations if o.ok and is_reference(o)}
    level = _noise_levels(reference_of)
    noisy = _noisy(level)
    _explain_noisy_checks(records, noisy)
    outliers = _flag_outliers(records, noisy)
    _flag_clean_pairs(records, level, outliers)
    failing_fd: dict = {}
    for r in records:
        if r["check"] == "fd" and r["verdict"] in ("diverge", "nan"):
            failing_fd.setdefault((r["case"], r["framework"]), []).append(r.get("cause"))
    return _Evidence(
        cases=cases, reference_of=reference_of, noisy=noisy, outliers=outliers,
        fd_failed={k for k, causes in failing_fd.items() if "ad-bug" in causes},
        # frameworks whose own fd check was made (and, by fd_failed, found no autodiff bug)
        fd_made={(r["case"], r["framework"]) for r in records if r["check"] == "fd" and r["verdict"] != "error"},
        symmetric={k for k, causes in failing_fd.items() if set(causes) == {"default-semantics"}},
        lossy=_lossy_references(records),
        forward={_pair_key(r): r for r in records if r["check"] == "forward"},
        off_reference={record_key(r, drop=_ONE_GRADIENT) for r in records
                       if r["check"] == "reference" and r["verdict"] == "diverge"},
        cpu_pass={record_key(r, drop=("device",)) for r in records if r["device"] == "cpu" and r["verdict"] == "pass"})


def _symmetric_input(rec: dict, ev: _Evidence) -> None:
    """A JVP 'autodiff bug' of a framework that treats a matrix input as symmetric is its convention."""
    if rec["check"] == "jvp" and rec.get("cause") == "ad-bug" and (rec["case"], rec["framework"]) in ev.symmetric:
        rec["cause"] = "default-semantics"
        rec["message"] = (f"{rec['framework']} treats a matrix input as symmetric (see its fd check): its forward "
                          "mode moves along the non-symmetric tangent, its reverse mode returns the symmetric "
                          "gradient")


def _device_precision_loss(rec: dict, ev: _Evidence) -> None:
    """A float64 forward-mode 'autodiff bug' on an accelerator, at float32's level, where
    the same check of the same framework passes on the CPU: the derivative rule is right (the CPU
    shows it) and a kernel of that device computes it in reduced precision. JAX's GPU lowering of
    max pooling's JVP (select_and_gather_add) is one: it packs each float64 (value, tangent) pair
    into 64 bits, rounding both to 32, where the CPU uses a variadic reduce-window."""
    if rec["check"] != "jvp" or rec.get("cause") != "ad-bug" or rec["dtype"] != "float64" \
            or rec["device"] == "cpu" or not _in_tier(rec):
        return
    if record_key(rec, drop=("device",)) not in ev.cpu_pass:
        return
    rec["cause"] = "precision-loss"
    rec["message"] = (f"{rec['framework']}'s float64 {rec['check']} on {rec['device']} is {rec['max_rel_err']:.1e} "
                      f"(of its scale) off, at float32's level, where the same check passes on the CPU: a "
                      f"{rec['device']} kernel computes this derivative in reduced precision, the rule itself "
                      "is right")


def _name_cause(rec: dict, ev: _Evidence) -> None:
    """The first cause the evidence establishes for one failing record, in order of evidence."""
    frameworks = [rec["framework"]] + ([rec["other_framework"]] if rec.get("other_framework") else [])
    buggy = [fw for fw in frameworks if (rec["case"], fw) in ev.fd_failed]
    if buggy and rec["check"] != "forward":
        rec["cause"] = "ad-bug"
        rec["message"] = f"{', '.join(buggy)} fails its finite-difference check"
        return
    noisy_here = [fw for fw in frameworks if (rec["case"], fw) in ev.noisy]
    if rec["dtype"] == "float64" and noisy_here and (rec.get("max_rel_err") or 0.0) <= NOISE_EXPLAINS:
        # a noisy evaluation also makes finite differences see kinks that are not there
        rec["cause"] = "precision-loss"
        rec["message"] = _noise_text(noisy_here[0], ev.noisy[(rec["case"], noisy_here[0])])
        return
    if rec["check"] in ("pairwise", "reference") and _at_kinks(rec, ev.reference_of, frameworks):
        rec["cause"] = "nondiff-convention"
        rec["message"] = "differs only at non-differentiable elements"
        return
    if rec.get("independent_in"):   # a zero subgradient at a kink is a convention (above), not this
        rec["cause"] = "unused-parameter"   # its message (verdicts._note_independence) says where
        return
    if _reduced_precision(rec, ev.off_reference):
        return
    if "default-semantics" in getattr(ev.cases.get(rec["case"]), "tags", ()):
        rec["cause"] = "default-semantics"
        return
    if _precision_loss(rec, ev.outliers, ev.lossy):
        return
    if rec["dtype"] == "float64" and rec["check"] in ("pairwise", "forward") and _in_tier(rec):
        rec["cause"] = "precision-loss"
        rec["message"] = (f"{' and '.join(frameworks)} differ by {rec['max_rel_err']:.1e} of the result's scale: "
                          "one of them is float64-accurate only to about float32 precision (no third framework "
                          "to say which)")
        return
    _different_function(rec, ev, frameworks)


def _different_function(rec: dict, ev: _Evidence, frameworks: list) -> None:
    """Both frameworks pass their own fd check but their forward values differ."""
    twin = ev.forward.get(_pair_key(rec))
    if rec["check"] == "forward" or (
            rec["check"] == "pairwise" and twin is not None and twin["verdict"] == "diverge"
            and all((rec["case"], fw) in ev.fd_made for fw in frameworks)):
        rec["cause"] = "different-function"
        values = (twin or rec).get("message", "")
        rec["message"] = (f"each framework agrees with its own finite differences, but the forward values "
                          f"differ ({values})" if rec["check"] == "pairwise" else
                          f"{values}: the frameworks compute different functions")


#: a pair of frameworks in one setting (its pairwise records and its forward record share it)
_PAIR = ("check", "param", "method")
#: one framework's gradient of one parameter in one setting
_ONE_GRADIENT = ("check", "method", "other_framework")


def _pair_key(rec: dict) -> tuple:
    return record_key(rec, drop=_PAIR)


def _noise_levels(reference_of: dict) -> dict:
    """(case, framework) -> the measured relative rounding noise of its float64 evaluation."""
    level = {}
    for key, o in reference_of.items():
        noise = ((o.row.get("fd") or {}).get("noise") or {}).get("relative")
        if noise is not None and np.isfinite(noise):
            level[key] = float(noise)
    return level


def _noisy(level: dict) -> dict:
    """(case, framework) -> the relative noise of its float64 evaluation, where that is at the
    float32 level and another framework evaluates the case at least 100 times more cleanly (a
    function that is steep or ill-conditioned there is so in every framework; two ports that
    both round through float32 -- one Keras layer on two backends -- are both noisy)."""
    out = {}
    for (case, fw), noise in level.items():
        others = [n for (c, f), n in level.items() if c == case and f != fw]
        if noise >= NOISE_FLOAT32 and (not others or noise >= 100 * min(others)):
            out[(case, fw)] = noise
    return out


def _noise_text(fw: str, noise: float) -> str:
    return (f"{fw}'s float64 evaluation carries float32-level rounding noise ({noise:.1e} of its scale; float64 "
            "rounding is ~1e-16): its float64 results are accurate only to about float32 precision")


def _explain_noisy_checks(records: list, noisy: dict) -> None:
    """A framework whose float64 function is noisy at float32 level has no float64-accurate
    result: every float64 check of it that compares values (its own fd/jvp/hvp/complex, and
    pairwise) fails with cause precision-loss. Forced, not left to the noise: whether one noisy
    estimate lands inside a float64 tolerance depends on the point, so a pass would flip with
    the seed. A failure larger than the noise explains by itself (NOISE_EXPLAINS: finite
    differences of a noisy function at a small gradient element) is still explained where a
    clean framework vouches for the gradient (_vouched)."""
    vouched = _vouched(records, noisy)
    for rec in records:
        frameworks = [rec["framework"]] + ([rec["other_framework"]] if rec.get("other_framework") else [])
        who = next((fw for fw in frameworks if (rec["case"], fw) in noisy), None)
        if (who is None or rec["dtype"] != "float64" or rec["verdict"] not in ("pass", "diverge")
                or rec["check"] not in ("fd", "jvp", "hvp", "complex", "pairwise", "forward")
                or (rec["verdict"] == "diverge" and (rec.get("max_rel_err") or 0.0) > NOISE_EXPLAINS
                    and record_key(rec, drop=_ONE_GRADIENT) not in vouched)):
            continue
        rec["verdict"], rec["cause"] = "diverge", "precision-loss"
        rec["message"] = _noise_text(who, noisy[(rec["case"], who)])


def _vouched(records: list, noisy: dict) -> set:
    """The float64 fd gradients (record_key without check/method/other) of noisy frameworks that a
    clean framework vouches for: it passes its own fd check of that parameter, and the noisy
    framework's autodiff gradient agrees with its gradient within the float32 tier. Its autodiff is
    then right, and its failing finite differences measure the noise of its function."""
    fd_pass = {(r["case"], r["framework"], r["param"], r["device"], r["mode"], r["precision"])
               for r in records if r["check"] == "fd" and r["dtype"] == "float64" and r["verdict"] == "pass"}
    out = set()
    for r in records:
        if r["check"] != "pairwise" or r["dtype"] != "float64" or r.get("max_rel_err") is None \
                or r["max_rel_err"] > TIER_CEILING:
            continue
        for fw, other in ((r["framework"], r["other_framework"]), (r["other_framework"], r["framework"])):
            if (r["case"], fw) in noisy and (r["case"], other) not in noisy and \
                    (r["case"], other, r["param"], r["device"], r["mode"], r["precision"]) in fd_pass:
                out.add(record_key(dict(r, framework=fw, check="fd"), drop=_ONE_GRADIENT))
    return out


def _float64_groups(records: list, checks: tuple) -> dict:
    """The float64 cross-framework records of ``checks`` that carry a distance, grouped by what
    every pair of one group compares: (case, device, mode, precision, check, param) -> records."""
    groups: dict = {}
    for r in records:
        if r["check"] in checks and r["dtype"] == "float64" and r["verdict"] in ("pass", "diverge") \
                and r.get("max_rel_err") is not None:
            groups.setdefault((r["case"], r["device"], r["mode"], r["precision"], r["check"], r["param"]), []).append(r)
    return groups


def _flag_outliers(records: list, noisy: dict) -> dict:
    """N-version over float64 pairwise and forward records of three or more frameworks: a
    framework whose result is at least TIER_FLOOR from every other and OUTLIER_RATIO times
    further than they are from each other (which agree to float64 rounding) is float32-accurate.
    Its pairwise records fail with cause precision-loss even within the float64 tolerance.
    Returns (case, framework, setting, check, param) -> (its distance, the others' distance)."""
    outliers = {}
    for key, recs in _float64_groups(records, ("pairwise", "forward")).items():
        frameworks = sorted({r["framework"] for r in recs} | {r["other_framework"] for r in recs})
        if len(frameworks) < 3:
            continue
        dist = {frozenset((r["framework"], r["other_framework"])): float(r["max_rel_err"]) for r in recs}
        for fw in frameworks:
            mine = [d for pair, d in dist.items() if fw in pair]
            # the others: the frameworks not noisy themselves (a noisy one is no oracle)
            others = [d for pair, d in dist.items()
                      if fw not in pair and not any((key[0], f) in noisy for f in pair)]
            if len(mine) < 2 or not others:
                continue
            near, spread = min(mine), max(others)
            if near > TIER_CEILING or near < OUTLIER_RATIO * spread:
                continue
            # within tolerance, only a float32-sized distance fails; a failing one is explained
            # by any distance the others' float64 agreement rules out as rounding
            if near >= TIER_FLOOR or (spread <= AGREE_FLOAT64 and any(
                    r["verdict"] == "diverge" for r in recs if fw in (r["framework"], r["other_framework"]))):
                outliers[(key[0], fw) + key[1:]] = (near, spread)
            if near >= TIER_FLOOR and key[4] == "pairwise":
                # a loss value is one number whose error depends on cancellation at the point:
                # the tier is judged on the gradients, the forward check keeps its tolerance
                for r in recs:
                    if fw in (r["framework"], r["other_framework"]) and r["verdict"] == "pass":
                        r["verdict"] = "diverge"
    return outliers


def _flag_clean_pairs(records: list, level: dict, outliers: dict) -> None:
    """Two frameworks with no third to arbitrate (only two installed, or the third computes a
    different function) whose float64 gradients differ by a float32-sized amount while each
    one's float64 evaluation is measured clean (noise <= CLEAN_NOISE): the distance is neither
    rounding nor conditioning, so one of them is float32-accurate. Fails within tolerance too,
    as N-version does, so the verdict does not hang on where the point puts a near-zero element."""
    arbitrated = {(k[0], k[1]) for k in outliers}
    for recs in _float64_groups(records, ("pairwise",)).values():
        for r in recs:
            pair = (r["framework"], r["other_framework"])
            near = float(r["max_rel_err"])
            if r["verdict"] != "pass" or not TIER_FLOOR <= near <= TIER_CEILING \
                    or any((r["case"], fw) in arbitrated for fw in pair):
                continue
            noise = [level.get((r["case"], fw)) for fw in pair]
            if any(n is None or n > CLEAN_NOISE for n in noise):
                continue
            # a third framework within OUTLIER_RATIO of either is an oracle the N-version pass had
            third = [float(o["max_rel_err"]) for o in recs if o is not r and set(pair) & {o["framework"],
                                                                                        o["other_framework"]}]
            if any(d * OUTLIER_RATIO <= near for d in third):
                continue
            r["verdict"], r["cause"] = "diverge", "precision-loss"
            r["message"] = (f"{' and '.join(pair)} differ by {near:.1e} of the result's scale while each one's float64 "
                            f"evaluation is clean (noise {max(noise):.0e}): one of them is float64-accurate only to "
                            "about float32 precision (no third framework to say which)")


def _lossy_references(records: list) -> dict:
    """Below float64: (case, framework, setting, param) -> (its error, the others' largest) where
    one framework's result is off its own float64 reference (no other cause) while every other
    framework's is within tolerance: an algorithm that loses precision in that dtype."""
    groups: dict = {}
    for r in records:
        if r["check"] == "reference" and r["dtype"] != "float64" and r["verdict"] in ("pass", "diverge"):
            groups.setdefault((r["case"], r["device"], r["dtype"], r["mode"], r["precision"], r["param"]), []).append(r)
    out = {}
    for key, recs in groups.items():
        bad = [r for r in recs if r["verdict"] == "diverge" and not r.get("cause")]
        good = [r for r in recs if r["verdict"] == "pass"]
        if len(bad) == 1 and len(good) >= 1:
            out[(key[0], bad[0]["framework"]) + key[1:]] = (float(bad[0]["max_rel_err"] or 0.0),
                                                            max(float(r["max_rel_err"] or 0.0) for r in good))
    return out


def _precision_loss(rec: dict, outliers: dict, lossy: dict) -> bool:
    frameworks = [rec["framework"]] + ([rec["other_framework"]] if rec.get("other_framework") else [])
    for fw in frameworks:
        hit = lossy.get((rec["case"], fw, rec["device"], rec["dtype"], rec["mode"], rec["precision"], rec["param"]))
        if hit is not None and rec["check"] in ("reference", "pairwise"):
            rec["cause"] = "precision-loss"
            rec["message"] = (f"{fw}'s {rec['dtype']} result is {hit[0]:.1e} (of its scale) off its own float64 "
                              f"reference, every other framework's within {hit[1]:.1e}: {fw} loses precision here "
                              f"beyond {rec['dtype']} rounding")
            return True
    for fw in frameworks:
        hit = outliers.get((rec["case"], fw, rec["device"], rec["mode"], rec["precision"], rec["check"], rec["param"]))
        if hit is not None:
            rec["cause"] = "precision-loss"
            rec["message"] = (f"{fw}'s float64 result is {hit[0]:.1e} (of its scale) from every other framework, which "
                              f"agree with each other to {hit[1]:.1e}: {fw} is accurate only to about float32 "
                              f"precision here")
            return True
    return False


def _in_tier(rec: dict) -> bool:
    return TIER_FLOOR <= float(rec.get("max_rel_err") or 0.0) <= TIER_CEILING and rec["verdict"] == "diverge"


def _reduced_precision(rec: dict, off_reference: set) -> bool:
    reduced = [fw for fw, pol in ((rec["framework"], rec.get("policy")),
                                  (rec.get("other_framework"), rec.get("other_policy")))
               if fw and (pol or {}).get("reduced_precision_float32") and rec["dtype"] == "float32"]
    # of those, the ones whose own gradient moved off their float64 reference
    moved = [fw for fw in reduced if record_key({**rec, "framework": fw}, drop=_ONE_GRADIENT) in off_reference]
    reduced = moved or reduced
    if not reduced:
        return False
    rec["cause"] = "precision-policy"
    rec["message"] = f"{', '.join(reduced)} computed float32 in reduced precision (TF32-style policy)"
    return True


def _at_kinks(rec, reference_of, frameworks) -> bool:
    """Is the worst element one that finite differences found non-differentiable?"""
    for fw in frameworks:
        ref = reference_of.get((rec["case"], fw))
        if ref is None or not ref.row.get("fd") or rec["param"] == "*":
            continue
        mask = ref.arrays("fd_nondiff").get(rec["param"])
        if mask is not None and mask.size and rec["worst_index"] is not None:
            if bool(mask[tuple(rec["worst_index"])]):
                return True
    return False


def _confirm_policy(records):
    """A precision-policy divergence that vanishes under --precision highest is confirmed."""
    def key(r):
        return record_key(r, drop=("precision",))
    highest = {key(r): r for r in records if r.get("precision") == "highest"}
    for rec in records:
        if rec.get("cause") != "precision-policy" or rec["precision"] != "default":
            continue
        twin = highest.get(key(rec))
        if twin is None:
            rec["message"] += "; rerun with --precision default,highest to confirm"
        elif twin["verdict"] == "pass":
            rec["message"] += (f"; confirmed: passes under --precision highest "
                               f"(max rel err {twin['max_rel_err']:.1e})")
        else:
            rec["cause"] = None
            rec["message"] += "; but it persists under --precision highest, so the policy is not the cause"


__all__ = ["NOISE_FLOAT32", "OUTLIER_RATIO", "TIER_CEILING", "TIER_FLOOR", "label"]
