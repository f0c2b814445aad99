"""Layer by layer: where two frameworks' modules first part ways. Framework-free.

A module case's eager observations carry each layer's input, output and the loss's gradient
with respect to that output (harness/worker/module_problem.py), keyed by the reference
module's layer path, in the order the layers finish. For each pair of frameworks in one
setting this makes a ``layer_forward`` and a ``layer_grad`` record per layer both sides have,
and marks:
  - the first divergence: the first layer whose input agrees and whose output does not (the
    layer that introduced the difference; a parent finishes after its children, so a mistake
    between two sublayers, such as a missing mask, names the parent);
  - the first diverging output gradient going backwards: the last layer in forward order whose
    output gradient diverges (the loss's gradient agrees above it).
Every pairwise gradient record of a module case gets its parameter's layer and the port's
name for it (the mapping the report shows). Layer records take the cause their pair's forward
or pairwise records were given: they locate a divergence, the gradients explain it; except
that a float64 layer whose outputs on the same input differ beyond float32 rounding overrules
a precision-loss label (a small difference of the gradients is no evidence of rounding then).
"""
from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np

from harness.judge.arrays import compare_arrays
from harness.judge.causes import TIER_CEILING
from harness.judge.own_checks import base_record, make_record
from harness.judge.tolerance import gradient_scale, lookup
from harness.vocab import DIVERGING, task_key

LAYER_CHECKS = ("layer_forward", "layer_grad")


def layer_records(observations: list, cases: dict, records: list) -> list:
    """The layer records of every pair of module observations in one setting (see the module
    docstring); annotates ``records``' pairwise rows of module cases with ``layer`` and
    ``port_param`` in place."""
    modules = {o.key: o for o in observations if o.ok and o.row.get("module")}
    if not modules:
        return []
    _annotate(records, modules)
    groups: dict = {}
    for o in modules.values():
        if o.row.get("layers") is not None:
            groups.setdefault(task_key(o.row, drop=("framework",)), []).append(o)
    out = []
    for members in groups.values():
        members.sort(key=lambda o: o.framework)
        for a, b in combinations(members, 2):
            overrides = getattr(cases.get(a.case), "tolerance", None)
            pair = _pair(a, b, lookup(a.dtype, overrides))
            theirs = _pair_records(records, a, b)
            _beyond_rounding(pair, theirs, a)
            _inherit_causes(pair, theirs)
            out += pair
    return out


def _pair(a, b, tol) -> list:
    for o in (a, b):
        info = o.row["layers"]
        if info.get("status") != "ok":
            recs = []
            for check in LAYER_CHECKS:
                rec = _record(a, b, check, "*")
                rec.update(verdict=info.get("status", "error"), cause=info.get("cause"),
                           message=f"{o.framework} could not trace its layers: {info.get('reason', '')}")
                recs.append(rec)
            return recs
    rows_a = {r["layer"]: r for r in a.row["layers"]["rows"]}
    rows_b = {r["layer"]: r for r in b.row["layers"]["rows"]}
    order = [r["layer"] for r in a.row["layers"]["rows"]]
    arrays_a = {k: a.arrays(k) for k in ("layer_in", "layer_out", "layer_grad")}
    arrays_b = {k: b.arrays(k) for k in ("layer_in", "layer_out", "layer_grad")}
    out = []
    for index, layer in enumerate(order):
        ra, rb = rows_a.get(layer), rows_b.get(layer)
        names = {"layer": layer, "layer_index": index, "port_layer": (ra or {}).get("port_layer"),
                 "other_port_layer": (rb or {}).get("port_layer"), "layer_type": (ra or rb or {}).get("layer_type")}
        missing = [o.framework for o, r in ((a, ra), (b, rb)) if r is None or r.get("port_layer") is None]
        if missing:
            for check in LAYER_CHECKS:
                rec = _record(a, b, check, layer, **names)
                rec.update(verdict="skipped", cause=None,
                           message=f"not compared: {' and '.join(missing)} has no layer for {layer} (its work is "
                                   "done by a function there, or the layers do not own the same parameters)")
                out.append(rec)
            continue
        fwd = _compare(a, b, "layer_forward", layer, arrays_a["layer_out"], arrays_b["layer_out"], tol, names)
        layout = fwd.get("layout") or None
        inputs = _compare(a, b, "layer_forward", layer, arrays_a["layer_in"], arrays_b["layer_in"], tol, names)
        fwd["input_agrees"] = inputs["verdict"] == "pass" if inputs["verdict"] != "error" else None
        out.append(fwd)
        if ra["calls"] != 1 or rb["calls"] != 1:
            rec = _record(a, b, "layer_grad", layer, **names)
            rec.update(verdict="skipped", cause=None,
                       message=f"not compared: called {ra['calls']} times in {a.framework}, {rb['calls']} in "
                               f"{b.framework}: no single output gradient")
            out.append(rec)
        else:
            out.append(_compare(a, b, "layer_grad", layer, arrays_a["layer_grad"], arrays_b["layer_grad"], tol, names,
                                layout))
    _mark(out)
    return out


def _compare(a, b, check, layer, got_all, expected_all, tol, names, how=None) -> dict:
    """One layer tensor of ``a`` against ``b``'s; ``how``: the layout the layer's forward
    comparison settled on (its output gradient has the output's layout), else the best fitting."""
    got, expected = got_all.get(layer), expected_all.get(layer)
    rec = _record(a, b, check, layer, **names)
    if got is None or expected is None:
        who = a.framework if got is None else b.framework
        rec.update(verdict="error", cause=None, message=f"{who} recorded no {check.split('_')[1]} tensor for {layer}")
        return rec
    aligned, how = align(got, expected, how)
    if aligned is None:
        rec.update(verdict="error", cause=None, message=f"not compared: {layer}'s tensors have shapes "
                   f"{list(got.shape)} ({a.framework}) and {list(expected.shape)} ({b.framework})")
        return rec
    comparison = compare_arrays(aligned, expected, tol, gradient_scale({"got": aligned, "expected": expected}))
    return _with_other(make_record(a, check, layer, comparison, tol, **names, layout=how), b)


#: the layouts a layer tensor may be in, relative to the other framework's: the same, or one
#: framework channels-last (Flax, Keras: NHWC) where the other is channels-first (torch: NCHW)
LAYOUTS = {"same": lambda x: x, "channels-last to channels-first": lambda x: np.moveaxis(x, -1, 1),
           "channels-first to channels-last": lambda x: np.moveaxis(x, 1, -1)}


def align(got: np.ndarray, expected: np.ndarray, how: str | None = None):
    """(got in expected's layout, the layout's name), or (None, '') when none fits the shape.
    With ``how`` that layout is used; otherwise, of the layouts that give expected's shape, the
    closest to it: a square feature map (C == H == W) fits every layout, and only the values
    tell NCHW from NHWC. The record names the layout used, so the choice is never silent."""
    fits = []
    for name, move in LAYOUTS.items():
        if how is not None and name != how:
            continue
        if name != "same" and got.ndim < 3:
            continue
        moved = move(got)
        if moved.shape == expected.shape:
            fits.append((name, moved))
    if not fits:
        return None, ""
    if len(fits) == 1:
        return fits[0][1], fits[0][0]

    def distance(moved):
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(moved - expected)
        return float(np.max(np.where(np.isfinite(d), d, np.inf), initial=0.0))
    name, moved = min(fits, key=lambda item: distance(item[1]))
    return moved, name


def _record(a, b, check, param, **names) -> dict:
    rec = base_record(a, check, param)
    rec.update(names)
    return _with_other(rec, b)


def _with_other(rec: dict, b) -> dict:
    """``rec`` as a record of a pair: the other framework, its version and policy."""
    rec.update(other_framework=b.framework, other_framework_version=b.row.get("version"),
               other_policy=b.row.get("policy") or {})
    return rec


def _mark(out: list) -> None:
    """The first forward divergence and the first diverging output gradient going backwards."""
    forward = [r for r in out if r["check"] == "layer_forward" and r["verdict"] in ("pass",) + DIVERGING]
    diverging = [r for r in forward if r["verdict"] in DIVERGING]
    if diverging:
        first = next((r for r in diverging if r.get("input_agrees")), diverging[0])
        first["first_divergence"] = True
        if first.get("input_agrees"):
            first["message"] = (f"first divergence: {first['layer']} gets the same input and gives different "
                                f"outputs (max rel {first['max_rel_err']:.2g}){_between(first, forward, out)}")
        else:
            before = [r for r in forward if r["verdict"] == "pass" and r["layer_index"] < first["layer_index"]]
            first["message"] = (f"first diverging output: {first['layer']}, whose input differs already"
                                + (f"; the last agreeing output is {before[-1]['layer']}'s: the difference is "
                                   "made between them, by code that is no layer on both sides" if before else ""))
    grads = [r for r in out if r["check"] == "layer_grad" and r["verdict"] in DIVERGING]
    if grads:
        last = max(grads, key=lambda r: r["layer_index"])
        last["first_divergence"] = True
        last["message"] = (f"going backwards, the loss's gradient first diverges at {last['layer']}'s output "
                           f"(max rel {last['max_rel_err']:.2g})")


def _between(parent: dict, forward: list, out: list) -> str:
    """Where inside ``parent`` the difference is made, when its own sublayers agree on their
    inputs up to one that does not: code of the parent's own between two sublayers."""
    inside = [r for r in forward if r["layer_index"] < parent["layer_index"]
              and r["layer"].startswith(parent["layer"]) and r["layer"][len(parent["layer"]):][:1] in "./"]
    if not inside:
        return ""
    later = next((r for r in inside if r["verdict"] in DIVERGING), None)
    agreeing = [r for r in inside if r["verdict"] == "pass" and (later is None or r["layer_index"] < later["layer_index"])]
    if later is None:
        return f"; its sublayers all agree: the difference is made by its own code after {inside[-1]['layer']}"
    if agreeing:
        lo, hi = agreeing[-1]["layer_index"], later["layer_index"]
        alone = [r["layer"] for r in out if r["check"] == "layer_forward" and r["verdict"] == "skipped"
                 and lo < r["layer_index"] < hi]
        return (f"; inside it, {agreeing[-1]['layer']}'s output agrees and {later['layer']}'s input already differs: "
                "the difference is made by its own code between them"
                + (f" (where {', '.join(alone)} runs, a layer on one side only)" if alone else ""))
    return f"; inside it, the first sublayer ({later['layer']}) already gets a different input: its own code before it"


def _annotate(records: list, modules: dict) -> None:
    """Pairwise records of module cases: the parameter's layer, the port's names for it."""
    for rec in records:
        if rec["check"] not in ("pairwise", "reference", "compiled", "fd", "jvp"):
            continue
        o = modules.get(task_key(rec))
        if o is None:
            continue
        info = o.row["module"]
        rec["layer"] = info.get("param_layers", {}).get(rec["param"])
        other = modules.get(task_key({**rec, "framework": rec.get("other_framework")})) \
            if rec["check"] == "pairwise" else None
        for side, key in ((o, "port_param"), (other, "other_port_param")):
            if side is None:
                continue
            link = next((m for m in side.row["module"]["mapping"] if rec["param"] in m["ref"]), None)
            if link is not None:
                rec[key] = ", ".join(link["port"])
                rec[key.replace("param", "rule")] = link["rule"]


def _pair_records(records: list, a, b) -> list:
    """The failing forward and pairwise records of the pair (a, b) in their setting."""
    key = task_key(a.row, drop=("framework",))
    return [r for r in records if r["check"] in ("forward", "pairwise") and r["verdict"] in DIVERGING
            and task_key(r, drop=("framework",)) == key and {r["framework"], r.get("other_framework")} ==
            {a.framework, b.framework}]


def _beyond_rounding(pair: list, theirs: list, a) -> None:
    """A float64 layer that gets the same input and gives outputs further apart than float32
    rounding moves a result is a different function there, however small the difference the
    loss and the gradients inherit: the pair's precision-loss labels (a float32-sized
    difference of the gradients) give way to that direct evidence."""
    first = next((r for r in pair if r["check"] == "layer_forward" and r.get("first_divergence")
                  and r.get("input_agrees")), None)
    if a.dtype != "float64" or first is None or first["max_rel_err"] <= TIER_CEILING:
        return
    for rec in theirs:
        if rec.get("cause") == "precision-loss":
            rec["cause"] = "different-function"
            rec["message"] = (f"{first['layer']} gets the same input in both and its outputs differ by "
                              f"{first['max_rel_err']:.2g} relative, beyond float32 rounding: the frameworks compute "
                              "different functions there")


def _inherit_causes(pair: list, theirs: list) -> None:
    """A failing layer record's cause is its pair's (``theirs``: _pair_records): the forward
    record's if it fails, else the commonest among the pair's failing pairwise records."""
    forward = [r["cause"] for r in theirs if r["check"] == "forward" and r.get("cause")]
    causes = Counter(r["cause"] for r in theirs if r["check"] == "pairwise" and r.get("cause"))
    cause = forward[0] if forward else (causes.most_common(1)[0][0] if causes else None)
    for rec in pair:
        if rec["verdict"] in DIVERGING and not rec.get("cause"):
            rec["cause"] = cause


__all__ = ["LAYER_CHECKS", "LAYOUTS", "align", "layer_records"]
