"""The one-step reductions of a program and its point, for delta debugging.

A finding is shrunk greedily: every reduction below is tried at once (one batched run), the
smallest that still shows the same divergence is kept, and again until none does. Over ops:
cut the program at an earlier node (its output becomes the program's), drop a node (its
consumers take its same-shaped argument instead), or replace a node by a leaf holding its exact
float64 value at the point (which keeps the values reaching the divergent op while removing all
that computed them). Over elements: slice every leaf along an axis of one length to fewer entries
(values are kept: plainer ones, 0 and 1, would put the point back on ties and kinks). Every
reduction is re-validated by the float64 forward (harness.fuzz.generate.invalid); the loss's
weights are sliced with the output.
"""
from __future__ import annotations

import warnings

import numpy as np

from harness.fuzz.generate import invalid, prune
from harness.fuzz.numpy_ops import NUMPY_OPS
from harness.fuzz.program import Node, Point, Program


def values(program: Program, point: Point, numpy=NUMPY_OPS) -> dict:
    """Every value of the program at the point (leaves and nodes), float64 numpy."""
    env = dict(point.params)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, node in enumerate(program.nodes):
            args = [env[a] if isinstance(a, str) else a["const"] for a in node.args]
            out = getattr(numpy, node.op)(*args, **node.kwargs())
            env[f"n{k}"] = np.asarray(out[node.part] if node.part is not None else out, dtype=np.float64)
    return env


def _weights_for(shape: tuple, old: np.ndarray, rng) -> np.ndarray:
    """The loss's weights for an output of ``shape``: the old ones where the shape is the same,
    sliced where it fits inside them, otherwise fresh."""
    old = np.asarray(old)
    if old.shape == tuple(shape):
        return old.copy()
    if old.ndim == len(shape) and all(n <= m for n, m in zip(shape, old.shape)):
        return old[tuple(slice(0, n) for n in shape)].copy()
    return rng.standard_normal(shape)


def _finish(program: Program, point: Point, params: dict, rng, numpy=NUMPY_OPS):
    """(program pruned and renamed, its point) or None when the reduction is invalid."""
    pruned, leaves = prune(program)
    kept = {leaves[k]: v for k, v in params.items() if k in leaves}
    styles = {leaves[k]: v for k, v in point.styles.items() if k in leaves}
    try:
        out = values(pruned, Point(kept, np.zeros(()), styles), numpy)[pruned.output]
    except Exception:  # noqa: BLE001 - a reduction numpy refuses is just not a reduction
        return None
    reduced = Point(kept, _weights_for(np.shape(out), point.weights, rng), styles)
    return None if invalid(pruned, reduced, numpy) else (pruned, reduced)


def reductions(program: Program, point: Point, rng, numpy=NUMPY_OPS) -> list:
    """Every valid one-step reduction (program, point), smaller than the given one; ``numpy``: the
    float64 forward (with a user's extra ops)."""
    def finish(p, params):
        return _finish(p, point, params, rng, numpy)

    out = []
    env = values(program, point, numpy)
    last = len(program.nodes) - 1
    for k in range(last):                                 # cut at node k
        cut = Program(program.params, program.nodes[:k + 1])
        out.append(finish(cut, point.params))
    for k in range(last + 1):                             # drop node k, or make it a leaf
        node, name = program.nodes[k], f"n{k}"
        same = [a for a in node.refs() if np.shape(env[a]) == np.shape(env[name])]
        if same and k < last:
            out.append(finish(_rewire(program, name, same[0]), point.params))
        if k < last and node.refs():
            leaf = f"x{len(program.params)}"
            params = dict(point.params, **{leaf: env[name]})
            rewired = _rewire(Program(program.params + ((leaf, np.shape(env[name])),), program.nodes), name, leaf)
            out.append(finish(rewired, params))
    out += _slices(program, point, finish)
    size = program.size()
    seen, kept = set(), []
    for r in out:
        if r is None or r[0].size() >= size:
            continue
        key = (str(r[0].to_json()), str(r[1].to_json()))
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept


def _rewire(program: Program, old: str, new: str) -> Program:
    """``old``'s consumers take ``new`` instead (the node itself is left for prune to drop)."""
    nodes = tuple(Node(n.op, tuple(new if a == old else a for a in n.args), n.attrs, n.part) for n in program.nodes)
    return Program(program.params, nodes)


def _slices(program: Program, point: Point, finish) -> list:
    """Every leaf axis of one length L, sliced to 1 and to L // 2 entries in every leaf at once."""
    lengths = sorted({n for _, shape in program.params for n in shape if n > 1})
    out = []
    for length in lengths:
        for keep in sorted({1, length // 2} - {0, length}):
            params, shapes = {}, []
            for name, shape in program.params:
                index = tuple(slice(0, keep) if n == length else slice(None) for n in shape)
                params[name] = point.params[name][index]
                shapes.append((name, params[name].shape))
            out.append(finish(Program(tuple(shapes), program.nodes), params))
    return out


def smaller(a: tuple, b: tuple) -> bool:
    """(program, point) ``a`` is a smaller repro than ``b``: fewer ops, then fewer elements."""
    return a[0].size() < b[0].size()


__all__ = ["reductions", "smaller", "values"]
