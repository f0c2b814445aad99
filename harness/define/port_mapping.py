"""Which parameter of a port is which parameter of the reference module, and how its layout
differs: matched by structure (layers in call order, shapes) under the known layout rules,
overridable by name, never guessed.

Both sides are lists of parameter descriptions (adapters/modules/base.py's ``Param``: path,
shape, layer, layer_type, role, trainable, gates) ordered by the call order of their layers.
The answer is a list of ``Link``: reference names, port names, and the steps that turn the
reference tensors into the port's (transpose, a conv layout permutation, a gate reordering, a
fused projection split, two recurrent biases summed). The steps run inside the differentiated
function, so the port's gradients arrive in the reference's names and layout by autodiff
itself. An ambiguous or incomplete match is a MappingError naming the candidates.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.case import CaseError

#: gate letters that name the same gate in different frameworks (torch's g / Keras's c: the
#: cell candidate; torch GRU's n / Keras's h: the new gate)
_SAME_GATE = {"c": "g", "h": "n"}


class MappingError(CaseError):
    """A port whose parameters cannot be matched to the reference's without a guess."""


@dataclass(frozen=True)
class Link:
    ref: tuple                       # reference parameter names
    port: tuple                      # port parameter names
    steps: tuple = ()                # ((op, *args), ...): 'perm', 'gates', 'split', 'sum'
    why: str = "identity"            # the rule, for the report's mapping table
    pinned: bool = field(default=False, compare=False)   # given by the case's mapping=

    def to_json(self) -> dict:
        return {"ref": list(self.ref), "port": list(self.port), "rule": self.why,
                "steps": [list(s) for s in self.steps], "pinned": self.pinned}


# ---- single-tensor rules ------------------------------------------------------------------------
def _conv_perm(ref_role: str, ndim: int) -> tuple:
    if ref_role == "conv.out_in":               # O I *S -> *S I O
        return tuple(range(2, ndim)) + (1, 0)
    return (ndim - 1, ndim - 2) + tuple(range(ndim - 2))   # *S I O -> O I *S


def _gate_order(ref_gates: str, port_gates: str):
    """Indices of the reference's gate chunks in the port's order, or None if they differ in kind."""
    a = [_SAME_GATE.get(g, g) for g in ref_gates]
    b = [_SAME_GATE.get(g, g) for g in port_gates]
    if sorted(a) != sorted(b):
        return None
    return tuple(a.index(g) for g in b)


def rule(ref, port) -> tuple | None:
    """(steps, why) turning ``ref``'s tensor into ``port``'s, or None when no known rule fits;
    ``('ambiguous', why)`` when a plain square matrix could be either layout."""
    rs, ps, rr, pr = tuple(ref.shape), tuple(port.shape), ref.role, port.role
    if ref.trainable != port.trainable:
        return None
    family = {r.split(".")[0] for r in (rr, pr)}
    if rr == pr and rr != "plain":
        return ((), "identity") if rs == ps else None
    if family == {"dense"}:
        return (((("perm", (1, 0)),), "transpose (Linear (out, in) <-> Dense (in, out))")
                if rs[::-1] == ps and len(rs) == 2 else None)
    if family == {"conv"}:
        perm = _conv_perm(rr, len(rs))
        return (((("perm", perm),), f"conv layout {_axes(rr, len(rs))} -> {_axes(pr, len(ps))}")
                if tuple(rs[i] for i in perm) == ps else None)
    if family == {"rnn"} and rr.split(".")[1] == pr.split(".")[1]:
        steps, names = [], []
        ref_axis = 0 if rr.endswith("out_in") or rr == "rnn.bias" else len(rs) - 1
        order = _gate_order(ref.gates, port.gates) if ref.gates and port.gates else None
        if ref.gates and port.gates and order is None:
            return None
        if order is not None and order != tuple(range(len(order))):
            steps.append(("gates", ref_axis, order))
            names.append(f"gates {ref.gates} -> {port.gates}")
        if rr.endswith("out_in") != pr.endswith("out_in") and rr != "rnn.bias":
            steps.append(("perm", (1, 0)))
            names.append("transpose")
        shape = rs[::-1] if any(s[0] == "perm" for s in steps) else rs
        return (tuple(steps), ", ".join(names) or "identity") if shape == ps else None
    if "plain" in (rr, pr) and rr != "stat" and pr != "stat":
        # a parameter of no known layer: its layout is told by its shape alone, when it can be
        if rs == ps and (len(rs) != 2 or rs[0] != rs[1]):
            return (), "identity (by shape)"
        if len(rs) == 2 and rs[::-1] == ps and rs[0] != rs[1]:
            return (("perm", (1, 0)),), "transpose (by shape)"
        if rs == ps:
            return ("ambiguous", f"square {rs}: identity or transpose cannot be told by shape")
    if {rr, pr} <= {"bias", "rnn.bias"} and rs == ps:
        return (), "identity"
    return None


def _axes(role: str, ndim: int) -> str:
    spatial = "DHW"[3 - (ndim - 2):] if ndim <= 5 else "S" * (ndim - 2)
    return f"OI{spatial}" if role == "conv.out_in" else f"{spatial}IO"


# ---- matching -------------------------------------------------------------------------------------
def _tokens(path: str) -> set:
    return {t for t in re.split(r"[./_\-]+", path.lower()) if t}


def _similarity(a: str, b: str) -> int:
    ta, tb = _tokens(a.rsplit(".", 1)[-1].rsplit("/", 1)[-1]), _tokens(b.rsplit(".", 1)[-1].rsplit("/", 1)[-1])
    return sum(1 for x in ta for y in tb if x == y or x.startswith(y) or y.startswith(x))


def _layers(params: list) -> list:
    """[(layer, [params])] in the params' (call) order, each layer once."""
    order: dict = {}
    for p in params:
        order.setdefault(p.layer, []).append(p)
    return list(order.items())


def _pair_layer(ref_params: list, port_params: list):
    """Links pairing two layers' parameters one to one (or a two-bias sum), or the reason not."""
    links, free = [], list(port_params)
    refs = list(ref_params)
    # two recurrent biases of the reference onto one of the port (b_ih + b_hh)
    biases = [p for p in refs if p.role == "rnn.bias"]
    if len(biases) == 2 and len(port_params) == len(ref_params) - 1:
        target = [q for q in free if tuple(q.shape) == tuple(biases[0].shape) and q.role in ("rnn.bias", "bias", "plain")
                  and q.trainable == biases[0].trainable]
        if len(target) == 1:
            order = _gate_order(biases[0].gates, target[0].gates) if target[0].gates else None
            steps = (("sum",),) + ((("gates", 0, order),) if order and order != tuple(range(len(order))) else ())
            links.append(Link(tuple(b.path for b in biases), (target[0].path,), steps,
                              f"{' + '.join(b.path.split('.')[-1].split('/')[-1] for b in biases)}"))
            free.remove(target[0])
            refs = [p for p in refs if p not in biases]
    for r in refs:
        fits = [(q, rule(r, q)) for q in free]
        fits = [(q, f) for q, f in fits if f is not None]
        if not fits:
            return None, f"no parameter of the port's layer fits {r.path} {tuple(r.shape)} ({r.role})"
        if len(fits) > 1:
            best = max(_similarity(r.path, q.path) for q, _ in fits)
            fits = [(q, f) for q, f in fits if _similarity(r.path, q.path) == best]
        if len(fits) > 1 and all(f[0] != "ambiguous" for _, f in fits) and "plain" not in (r.role,) \
                and all(q.role != "plain" for q, _ in fits):
            fits = fits[:1]   # one known layer type's tensors of one role: their listing order decides
        if len(fits) > 1 or fits[0][1][0] == "ambiguous":
            return None, (f"{r.path} {tuple(r.shape)} could be "
                          + " or ".join(f"{q.path} {tuple(q.shape)}" for q, _ in fits)
                          + (f" ({fits[0][1][1]})" if fits[0][1][0] == "ambiguous" else ""))
        q, (steps, why) = fits[0]
        links.append(Link((r.path,), (q.path,), tuple(steps), why))
        free.remove(q)
    if free:
        return None, f"the port's {', '.join(q.path for q in free)} match nothing of the reference's layer"
    return links, ""


def _split(ref_layer: list, port_layers: list):
    """A fused projection of the reference (one layer, output axis k times wider) onto k port
    layers (separate q, k, v): links splitting each reference tensor along its output axis."""
    k = len(port_layers)
    links = []
    for r in ref_layer:
        axis = 0 if r.role in ("dense.out_in", "bias") else len(r.shape) - 1
        if tuple(r.shape)[axis] % k:
            return None
        chunk = tuple(n // k if i == axis else n for i, n in enumerate(r.shape))
        piece = type(r)(**{**r.__dict__, "shape": chunk})
        outs, steps, why = [], None, None
        for layer in port_layers:
            found = [(q, rule(piece, q)) for q in layer]
            found = [(q, f) for q, f in found if f is not None and f[0] != "ambiguous"]
            if len(found) != 1:
                return None
            outs.append(found[0][0].path)
            steps, why = found[0][1]
        links.append(Link((r.path,), tuple(outs), (("split", axis, k),) + tuple(steps),
                          f"fused -> {k} split along axis {axis}" + (f", then {why}" if steps else "")))
    return links


def match(ref: list, port: list, pinned: dict | None = None) -> list:
    """Links covering every reference and port parameter; ``pinned``: {ref name: port name or
    (port name, 'identity' | 'transpose')} taken as given. MappingError when the structures
    cannot be matched without a guess, naming the candidates."""
    links = []
    by_ref, by_port = {p.path: p for p in ref}, {p.path: p for p in port}
    for r_name, target in (pinned or {}).items():
        q_name, how = (target, None) if isinstance(target, str) else tuple(target)
        if r_name not in by_ref:
            raise MappingError(f"mapping names {r_name!r}, not a parameter of the reference; its parameters: "
                               + ", ".join(by_ref))
        if q_name not in by_port:
            raise MappingError(f"mapping maps {r_name!r} to {q_name!r}, not a parameter of the port; candidates: "
                               + ", ".join(p.path for p in port if p.shape in (by_ref[r_name].shape,
                                                                               tuple(by_ref[r_name].shape)[::-1])))
        r, q = by_ref[r_name], by_port[q_name]
        if how == "transpose":
            steps, why = (("perm", (1, 0)),), "transpose (given)"
        elif how == "identity":
            steps, why = (), "identity (given)"
        else:
            found = rule(r, q)
            if found is None or found[0] == "ambiguous":
                raise MappingError(f"mapping {r_name!r} -> {q_name!r}: shapes {tuple(r.shape)} and {tuple(q.shape)} "
                                   f"({r.role}, {q.role}) fit no layout rule; give (name, 'identity' | 'transpose')")
            steps, why = found
        links.append(Link((r_name,), (q_name,), tuple(steps), why, pinned=True))
    taken_ref = {n for link in links for n in link.ref}
    taken_port = {n for link in links for n in link.port}
    ref_layers = [(l, ps) for l, ps in _layers([p for p in ref if p.path not in taken_ref])]
    port_layers = [(l, ps) for l, ps in _layers([p for p in port if p.path not in taken_port])]
    i = j = 0
    while i < len(ref_layers) and j < len(port_layers):
        (rl, rps), (pl, pps) = ref_layers[i], port_layers[j]
        paired, why = _pair_layer(rps, pps)
        if paired is not None:
            links += paired
            i, j = i + 1, j + 1
            continue
        split = None
        for k in (2, 3, 4):
            if j + k <= len(port_layers):
                split = _split(rps, [ps for _, ps in port_layers[j:j + k]])
                if split:
                    links += split
                    i, j = i + 1, j + k
                    break
        if split:
            continue
        raise MappingError(f"cannot match the reference's layer {rl!r} ({_shapes(rps)}) with the port's {pl!r} "
                           f"({_shapes(pps)}): {why}; port layers that fit it: {_fitting(rps, port_layers) or 'none'}; "
                           f"give mapping={{reference name: port name}}")
    if i < len(ref_layers) or j < len(port_layers):
        left_ref = [p.path for _, ps in ref_layers[i:] for p in ps]
        left_port = [p.path for _, ps in port_layers[j:] for p in ps]
        raise MappingError("incomplete mapping: "
                           + (f"the reference's {', '.join(left_ref)} match nothing in the port" if left_ref else "")
                           + ("; " if left_ref and left_port else "")
                           + (f"the port's {', '.join(left_port)} match nothing in the reference" if left_port else "")
                           + "; give mapping={reference name: port name}")
    return links


def _shapes(params: list) -> str:
    return ", ".join(f"{p.path.split('.')[-1].split('/')[-1]} {tuple(p.shape)}" for p in params)


def _fitting(ref_params: list, port_layers: list) -> str:
    return "; ".join(layer for layer, ps in port_layers if _pair_layer(ref_params, ps)[0] is not None)


def layer_pairs(ref_layers: list, port_layers: list, links: list, ref_params: list, port_params: list) -> dict:
    """{reference layer: port layer}: layers own the parameters under them (their own and their
    children's); two layers correspond when the links map one's set onto the other's exactly.
    Layers owning none correspond by name (separators and case ignored). ``*_layers``: paths."""
    to_ref = {q: link.ref for link in links for q in link.port}

    def owned(layer, params, sep):
        return {p.path for p in params if p.layer == layer or p.layer.startswith(layer + sep)}

    ref_sep = "." if any("." in p.path for p in ref_params) else "/"
    port_sep = "." if any("." in p.path for p in port_params) and not any("/" in p.path for p in port_params) else "/"
    ref_sets = {}
    for layer in ref_layers:
        ref_sets.setdefault(frozenset(owned(layer, ref_params, ref_sep)), []).append(layer)
    pairs = {}
    by_set: dict = {}
    for layer in port_layers:
        mapped = frozenset(r for q in owned(layer, port_params, port_sep) for r in to_ref.get(q, ()))
        by_set.setdefault(mapped, []).append(layer)
    for key, refs in ref_sets.items():
        if key and key in by_set:
            for a, b in zip(sorted(refs, key=len), sorted(by_set[key], key=len)):
                pairs[a] = b
    norm = {_norm(l): l for l in port_layers if l not in pairs.values()}
    for layer in ref_layers:
        if layer not in pairs and _norm(layer) in norm:
            pairs[layer] = norm[_norm(layer)]
    return pairs


def _norm(path: str) -> str:
    return re.sub(r"[./_\-]+", "_", path.lower())


__all__ = ["Link", "MappingError", "layer_pairs", "match", "rule"]
