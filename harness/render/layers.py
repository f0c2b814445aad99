"""The report's porting section: for each module case, the weight mapping it was checked
through and, per pair of frameworks and setting, where the two modules part ways, in one line
built from the layer records (harness/judge/layers.py) and the pairwise gradient records."""
from __future__ import annotations

from collections import defaultdict

from harness.judge.layers import LAYER_CHECKS
from harness.render import markdown as md
from harness.vocab import DIVERGING, sortable, task_key


def porting_section(records) -> list:
    """"## Porting": per module case, its mapping table and its localisation lines."""
    by_case = defaultdict(list)
    for r in records:
        if r["check"] in LAYER_CHECKS or (r["check"] == "pairwise" and r.get("port_param")):
            by_case[r["case"]].append(r)
    if not by_case:
        return []
    lines = ["## Porting", "",
             "Module cases: the weight mapping each port was checked through (the reference module's names, "
             "each framework's name for the same tensor and the layout rule), then, per pair of frameworks and "
             "setting, where their modules part ways, layer by layer.", ""]
    for case in sorted(by_case):
        lines += [f"### {case} (layers)", ""] + localisation_lines(by_case[case]) + [""]
        lines += mapping_table(by_case[case])
    return lines


def mapping_table(case_records) -> list:
    """The mapping from the float64 eager pairwise records: one row per reference parameter,
    one column per other framework (its name and the rule)."""
    names: dict = defaultdict(dict)
    layer_of: dict = {}
    for r in case_records:
        if r["check"] != "pairwise" or r["dtype"] != "float64" or r["mode"] != "eager":
            continue
        for fw, key, rule in ((r["framework"], "port_param", "port_rule"),
                              (r.get("other_framework"), "other_port_param", "other_port_rule")):
            if r.get(key) and r[key] != r["param"]:
                names[r["param"]][fw] = f"`{r[key]}` ({r.get(rule) or 'identity'})"
        layer_of[r["param"]] = r.get("layer") or ""
    if not names:
        return []
    frameworks = sorted({fw for row in names.values() for fw in row})
    rows = [[f"`{p}`", f"`{layer_of[p]}`" if layer_of[p] else ""] + [names[p].get(fw, "") for fw in frameworks]
            for p in names]
    return md.fold(f"weight mapping ({len(rows)} tensors)", [md.table(rows, ["reference", "layer"] + frameworks)],
                   len(rows))


def localisation_lines(case_records) -> list:
    """One line per pair and setting: every layer agrees, or where the forward first diverges,
    where the gradient flowing back first diverges, and from which layer the parameter
    gradients diverge."""
    pairs = defaultdict(list)
    for r in case_records:
        pairs[(task_key(r, drop=("framework",)), r["framework"], r.get("other_framework"))].append(r)
    lines = []
    for (_key, fw, other), recs in sorted(pairs.items(), key=lambda kv: sortable(kv[0][0]) + (kv[0][1], str(kv[0][2]))):
        layer = [r for r in recs if r["check"] in LAYER_CHECKS]
        if not layer:
            continue
        head = f"- **{fw} vs {other}, {md.setting(layer[0])}**: "
        lines.append(head + _sentence(layer, [r for r in recs if r["check"] == "pairwise"]))
    return lines


def _sentence(layer: list, pairwise: list) -> str:
    compared = [r for r in layer if r["check"] == "layer_forward" and r["verdict"] not in ("skipped", "error")]
    alone = sorted({r["layer"] for r in layer if r["check"] == "layer_forward" and r["verdict"] == "skipped"})
    broken = [r for r in layer if r["verdict"] == "error"]
    if broken:
        return f"layers not compared: {md.cell(broken[0].get('message'))}"
    first = next((r for r in layer if r["check"] == "layer_forward" and r.get("first_divergence")), None)
    grad = next((r for r in layer if r["check"] == "layer_grad" and r.get("first_divergence")), None)
    bad_params = [r for r in pairwise if r["verdict"] in DIVERGING]
    tail = f" ({len(alone)} layer(s) on one side only, not compared)" if alone else ""
    if first is None and grad is None:
        text = f"every layer agrees, forward and backward ({len(compared)} compared){tail}"
        return text + (f"; yet {len(bad_params)} parameter gradient(s) diverge" if bad_params else "")
    parts = []
    if first is not None:
        inside = first["layer"] + "."
        through = [r for r in compared if r["verdict"] == "pass" and r["layer_index"] < first["layer_index"]
                   and not r["layer"].startswith(inside)]
        parts.append((f"forward agrees through `{through[-1]['layer']}`; " if through else "")
                     + f"first divergence at `{first['layer']}` (forward max rel {md.num(first.get('max_rel_err'))}"
                     + ("" if first.get("input_agrees") else ", its input already differs") + ")")
    else:
        parts.append(f"the forward agrees in every layer ({len(compared)} compared)")
    if grad is not None:
        parts.append(f"output gradients diverge from `{grad['layer']}` down")
    if bad_params:
        index = {r["layer"]: r["layer_index"] for r in layer}
        top = max(bad_params, key=lambda r: (index.get(r.get("layer"), -1), r["param"]))
        parts.append(f"parameter gradients diverge ({len(bad_params)} of {len(pairwise)}) from "
                     f"`{top.get('layer') or top['param']}` down")
    detail = first.get("message") if first is not None else None
    return "; ".join(parts) + tail + "." + (f" {md.cell(detail)}." if detail and "inside it" in detail else "")


__all__ = ["localisation_lines", "mapping_table", "porting_section"]
