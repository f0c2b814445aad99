"""Which failing records of a fuzz round are worth a finding, and which the filters remove.

∇Fuzz's lesson is that most raw gradient differences of random programs are not bugs: a point at
a kink, a random op, NaN that every framework makes alike, float32 rounding. Each failing record
of a round gets one ``Verdict``:

- ``candidate``: a divergence no filter explains, to be confirmed (repeat, perturbed points:
  harness.fuzz.confirm) and minimised;
- ``apart``: real and reported, but not a bug: a non-differentiable point's convention, a default
  that differs by design (eigh of a non-symmetric input), NaN/inf alike in every framework
  ("shared"), a nondeterministic result, an error a framework raised;
- ``dropped``: a precision difference: the judge's precision causes, a float32 error no larger
  than PRECISION_K times the best float32 error of the same gradient among the frameworks (the
  float64-anchored noise floor), or an error below RESOLUTION times the loss itself (a gradient
  that is rounding of an exact zero, compared at a scale it does not have).

Pure functions of the records (and, for misused_semantics, of the program and its point).
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.fuzz.generate import SYMMETRIC_INPUT
from harness.vocab import DIVERGING

#: a float32 error within this factor of the best framework's float32 error is rounding
PRECISION_K = 10.0
#: a float64 result this close (relative) is float32 rounding somewhere inside, not a wrong derivative
FLOAT32_LEVEL = 1e-5
#: an error this small against the loss itself is rounding no computation can resolve
RESOLUTION = 1e-12
#: the judge's causes that are conventions or settings, reported apart from findings
APART_CAUSES = {"nondiff-convention": "nondiff-convention", "default-semantics": "default-semantics",
                "nondeterminism": "nondeterministic"}
DROPPED_CAUSES = ("precision-loss", "precision-policy")
#: checks a finding can come from (determinism and layer checks are not fuzz oracles)
ORACLES = ("fd", "jvp", "hvp", "compiled", "reference", "pairwise", "forward")


@dataclass(frozen=True)
class Verdict:
    kind: str        # candidate / apart / dropped
    label: str       # the class: the cause, "shared-nan", "precision-floor", "error", ...
    why: str = ""


def signature(record: dict) -> tuple:
    """What makes two failing records the same divergence, whatever the program: the check, the
    framework (and the other one), dtype, mode and device. Leaf names are not in it: minimisation
    renames."""
    return (record["check"], record["framework"], record.get("other_framework"), record["dtype"], record["mode"],
            record.get("device") or "cpu")


def _reference_errors(records: list) -> dict:
    """(case, device, dtype, mode, param) -> {framework: max abs error of its reference record}."""
    out: dict = {}
    for r in records:
        if r["check"] == "reference" and r.get("max_abs_err") is not None and r["verdict"] in ("pass",) + DIVERGING:
            key = (r["case"], r.get("device"), r["dtype"], r["mode"], r["param"])
            out.setdefault(key, {})[r["framework"]] = r["max_abs_err"]
    return out


def _shared_nan(record: dict, records: list) -> bool:
    """Every framework's record of this check and setting is NaN (none passes, none diverges)."""
    fields = ("case", "check", "device", "dtype", "mode", "param")
    same = [r for r in records if all(r.get(f) == record.get(f) for f in fields)]
    frameworks = {r["framework"] for r in same} | {r.get("other_framework") for r in same} - {None}
    return record["verdict"] == "nan" and len(frameworks) > 1 and all(r["verdict"] == "nan" for r in same)


def _all_nan(record: dict, records: list) -> bool:
    """For a pairwise record: both frameworks' own results are NaN alike (each one's fd record nan)."""
    sides = {record["framework"], record.get("other_framework")}
    own = [r for r in records if r["case"] == record["case"] and r["framework"] in sides and r["check"] == "fd"
           and r["param"] == record["param"]]
    return len({r["framework"] for r in own}) == 2 and all(r["verdict"] == "nan" for r in own)


def context(records: list) -> dict:
    """What judging one record needs of all of them, computed once per round: the float32 floors and
    the loss values."""
    return {"floors": _reference_errors(records), "losses": _loss_values(records)}


def judge(record: dict, records: list, known: dict | None = None) -> Verdict:
    """The verdict of one failing record among its round's ``records``."""
    known = known if known is not None else context(records)
    if record["verdict"] == "error":
        return Verdict("apart", "error", (record.get("message") or "").split("\n")[0])
    if record["check"] not in ORACLES:
        return Verdict("apart", record["check"], record.get("message", ""))
    cause = record.get("cause")
    if cause in DROPPED_CAUSES:
        if record["dtype"] == "float64" and _within_tolerance(record):
            # a check the judge fails for its framework's float32-level noise (in a pack: another
            # member's), whose own error is within tolerance: nothing of its own to report
            return Verdict("dropped", "within-tolerance", "passes on its own error; failed for the noise of "
                                                          "its framework's evaluation")
        if record["dtype"] == "float64":   # float64 computed through float32: a divergence, not a bug
            return Verdict("apart", "precision-loss", record.get("message", ""))
        return Verdict("dropped", cause, "the judge's precision cause")
    if cause in APART_CAUSES:
        return Verdict("apart", APART_CAUSES[cause], record.get("message", ""))
    if _shared_nan(record, records) or (record["check"] == "pairwise" and _all_nan(record, records)):
        return Verdict("apart", "shared-nan", "NaN/inf alike in every framework")
    loss = known["losses"].get((record["case"], record["framework"], record.get("device"), record["dtype"],
                                record["mode"]))
    if loss is not None and (record.get("max_abs_err") or 0.0) <= RESOLUTION * abs(loss):
        return Verdict("dropped", "below-resolution",
                       f"error {record.get('max_abs_err'):.3g} is {RESOLUTION:g} of the loss ({loss:.3g}) or less")
    if record["dtype"] == "float64" and (record.get("max_rel_err") or 0.0) <= FLOAT32_LEVEL \
            and record["check"] in ("fd", "jvp", "reference", "pairwise", "compiled", "forward"):
        return Verdict("apart", "precision-loss",
                       f"float64 off by {record.get('max_rel_err'):.2g} relative: float32-level rounding (an "
                       "intermediate computed in float32), not a wrong derivative")
    floor = _floor(record, known["floors"])
    if floor is not None and (record.get("max_abs_err") or 0.0) <= PRECISION_K * floor:
        return Verdict("dropped", "precision-floor",
                       f"error {record.get('max_abs_err'):.3g} within {PRECISION_K:g} x the best framework's "
                       f"{record['dtype']} error {floor:.3g}")
    return Verdict("candidate", cause or record["check"], record.get("message", ""))


def _within_tolerance(record: dict) -> bool:
    err, expected = record.get("max_abs_err"), record.get("expected")
    scale = abs(expected) if isinstance(expected, (int, float)) else 0.0
    return err is not None and err <= (record.get("atol") or 0.0) + (record.get("rtol") or 0.0) * scale


def _loss_values(records: list) -> dict:
    """(case, framework, device, dtype, mode) -> the loss value, from the forward records."""
    out = {}
    for r in records:
        if r["check"] == "forward" and r.get("got") is not None:
            out[(r["case"], r["framework"], r.get("device"), r["dtype"], r["mode"])] = r["got"]
            if r.get("other_framework") and r.get("expected") is not None:
                out[(r["case"], r["other_framework"], r.get("device"), r["dtype"], r["mode"])] = r["expected"]
    return out


def _floor(record: dict, floors: dict):
    """The noise floor of a non-float64 record: the smallest error any framework's same gradient
    has against its own float64 one (pairwise: the two frameworks' errors added), or None (float64,
    or a floor only the record's own framework gives)."""
    if record["dtype"] == "float64" or record["check"] not in ("reference", "pairwise", "compiled"):
        return None
    errors = floors.get((record["case"], record.get("device"), record["dtype"], record["mode"], record["param"]), {})
    if record["check"] == "pairwise":
        sides = [errors.get(record["framework"]), errors.get(record.get("other_framework"))]
        return None if None in sides else sides[0] + sides[1]
    others = [e for fw, e in errors.items() if fw != record["framework"]]
    return min(others) if others else None


def misused_semantics(program) -> str:
    """Why the program relies on a default that differs between frameworks by design ('' if it does
    not): eigh or cholesky of a matrix that is not symmetric by construction, (a + a^T) / 2. They read
    one triangle, so off the symmetric matrices each framework computes (and differentiates) its own
    function; finite differences of one element leave them too."""
    nodes = {f"n{k}": node for k, node in enumerate(program.nodes)}
    for node in program.nodes:
        if node.op in SYMMETRIC_INPUT and not _symmetrised(node.args[0], nodes):
            return (f"{node.op} of a matrix not symmetric by construction: each framework reads its own "
                    "triangle (default semantics)")
    return ""


def _symmetrised(name, nodes: dict) -> bool:
    """``name`` is mul(add(a, transpose(a)), 0.5) (or add(a, transpose(a)))."""
    node = nodes.get(name) if isinstance(name, str) else None
    if node is not None and node.op == "mul" and len(node.args) == 2 and not isinstance(node.args[1], str):
        node = nodes.get(node.args[0]) if isinstance(node.args[0], str) else None
    if node is None or node.op != "add" or not all(isinstance(a, str) for a in node.args):
        return False
    a, b = node.args
    return any(nodes.get(y) is not None and nodes[y].op == "transpose" and nodes[y].args == (x,) and
               len(nodes[y].attrs) == 0 for x, y in ((a, b), (b, a)))


def triage(records: list) -> list:
    """(record, Verdict) for every failing record (verdict diverge, nan or error) of a round."""
    known = context(records)
    return [(r, judge(r, records, known)) for r in records if r["verdict"] in DIVERGING + ("error",)]


__all__ = ["APART_CAUSES", "DROPPED_CAUSES", "FLOAT32_LEVEL", "ORACLES", "PRECISION_K", "RESOLUTION", "Verdict", "context", "judge", "misused_semantics", "signature", "triage"]
