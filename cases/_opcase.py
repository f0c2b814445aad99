"""The shape every op-sweep case shares: one op, a weighted-sum loss, small fixed sizes.

The loss is ``sum(w * op(x))`` with ``w`` a random input of the output's shape: a plain sum
would hide a transposed, permuted or mis-broadcast gradient (and softmax's would be zero).
Random points are drawn from the case's rng; edge points are fixed arrays, so an edge case
holds its exact zeros, ties and magnitudes in every framework and every run.
"""
from __future__ import annotations

import numpy as np

from harness import Case

#: one shape for most elementwise cases: JAX compiles each primitive once per shape
SHAPE = (3, 4)

#: float64 tolerance for a single small op (an elementwise function, one attention): little
#: accumulates, so every framework's float64 result is within a few ulps of the others, and a
#: gap above 1e-12 is a real difference (a constant or a softmax rounded through float32, another
#: formula), not rounding
SINGLE_OP_FLOAT64 = {"float64": {"rtol": 1e-12, "atol": 1e-14}}

#: edge points for a kink at 0 (relu, abs, elu, ...): exact zeros among values on either side
KINKS = np.array([[-1.5, 0.0, 0.0, 1.0], [0.0, 2.0, -0.5, 0.0], [0.3, 0.0, -2.0, 0.0]])


def weighted(ops, y, w):
    """sum(w * y): every element of y reaches the gradient with its own random weight."""
    return ops.sum(ops.mul(y, w))


def op_case(name: str, family: str, make, loss, doc: str, tags=(), **kwargs) -> Case:
    """A Case named op_<name>, tagged 'ops' and its family."""
    return Case(name=f"op_{name}", make=make, loss=loss, doc=doc, tags=("ops", family, *tags), **kwargs)


def family(family_name: str, tolerance: dict | None = None):
    """(case, edge): op_case bound to one family; edge() puts the tag 'edge' before the case's
    own tags. A ``tolerance`` is each case's default (a case's own tolerance=, even None, wins)."""
    def case(name, make, loss, doc, tags=(), **kwargs):
        if tolerance is not None:
            kwargs.setdefault("tolerance", tolerance)
        return op_case(name, family_name, make, loss, doc, tags, **kwargs)

    def edge(name, make, loss, doc, tags=(), **kwargs):
        return case(name, make, loss, doc, ("edge", *tags), **kwargs)
    return case, edge


def uniform(lo: float, hi: float, shape=SHAPE, names=("x",), out_shape=None):
    """make(): params drawn uniformly from [lo, hi), weights of ``out_shape`` (default: shape)."""
    def make(rng):
        params = {n: rng.uniform(lo, hi, shape) for n in names}
        return params, {"w": rng.standard_normal(shape if out_shape is None else out_shape)}
    return make


def normal(shape=SHAPE, names=("x",), out_shape=None):
    """make(): standard normal params, weights of ``out_shape`` (default: shape; () for a scalar)."""
    def make(rng):
        params = {n: rng.standard_normal(shape) for n in names}
        return params, {"w": rng.standard_normal(shape if out_shape is None else out_shape)}
    return make


def point_rng():
    """The generator for the rest of a case whose params are all fixed: an edge point is a
    point, not a draw, so its weights are fixed too and its verdicts cannot move with the
    run's seed (a random weight rescales which element's rounding decides the verdict)."""
    return np.random.default_rng(0)


def points(out_shape=None, **fixed):
    """make(): params fixed to the given edge values, fixed pseudo-random weights (of
    ``out_shape``, default the first param's shape); see point_rng."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in fixed.items()}

    def make(rng):
        shape = next(iter(arrays.values())).shape if out_shape is None else out_shape
        return {k: v.copy() for k, v in arrays.items()}, {"w": point_rng().standard_normal(shape)}
    return make


def unary(op: str, **kwargs):
    """loss(): weighted(op(x, **kwargs))."""
    def loss(ops, p, i):
        return weighted(ops, getattr(ops, op)(p["x"], **kwargs), i["w"])
    return loss


def binary(op: str, **kwargs):
    """loss(): weighted(op(x, y, **kwargs))."""
    def loss(ops, p, i):
        return weighted(ops, getattr(ops, op)(p["x"], p["y"], **kwargs), i["w"])
    return loss
