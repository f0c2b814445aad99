"""Op sweep, elementwise math: each op at random points in its domain and at its edge points.

Edge points are where frameworks really differ: the derivative at a kink or a tie (each
framework's convention, judged by one-sided limits), a step function's jump, magnitudes where
a naive formula overflows, and NaN or inf in the branch a `where` does not select (its
gradient is 0 * inf = NaN unless the framework guards it).
"""
import numpy as np

from ._opcase import KINKS, SINGLE_OP_FLOAT64, binary, family, points, uniform, unary, weighted

_case, _edge = family("elementwise", SINGLE_OP_FLOAT64)


# (op, domain) at random points, x of shape (3, 4)
_UNARY = [
    ("abs", (-2, 2)), ("sign", (-2, 2)), ("sqrt", (0.5, 3)), ("rsqrt", (0.5, 3)), ("exp", (-2, 2)),
    ("expm1", (-2, 2)), ("log", (0.5, 3)), ("log1p", (-0.5, 2)), ("sin", (-3, 3)), ("cos", (-3, 3)),
    ("tan", (-1.2, 1.2)), ("tanh", (-2, 2)), ("sigmoid", (-4, 4)), ("erf", (-2, 2)),
    ("floor", (-3, 3)), ("round", (-3, 3)),
]


def _broadcast_loss(ops, p, i):
    # (3, 4) against (4,): each framework must sum the broadcast gradient back to (4,)
    x, b = p["x"], p["b"]
    y = ops.div(ops.mul(ops.sub(ops.add(x, b), 0.5), b), ops.add(ops.square(b), 1.0))
    return weighted(ops, ops.neg(y), i["w"])


def _broadcast_make(rng):
    return {"x": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}, {"w": rng.standard_normal((3, 4))}


def _pow_loss(ops, p, i):
    return weighted(ops, ops.pow(p["x"], p["y"]), i["w"])


def _clip_loss(ops, p, i):
    return weighted(ops, ops.clip(p["x"], -0.5, 0.5), i["w"])


def _sqrt_where_loss(ops, p, i):
    x = p["x"]
    return weighted(ops, ops.where(ops.greater(x, 0.0), ops.sqrt(x), 0.0), i["w"])


def _log_where_loss(ops, p, i):
    x = p["x"]
    return weighted(ops, ops.where(ops.greater(x, 0.0), ops.log(x), 0.0), i["w"])


def _sinc_where_loss(ops, p, i):
    # sin(x)/x with the removable singularity patched by where: 0/0 sits in the unselected branch
    x = p["x"]
    nonzero = ops.greater(ops.abs(x), 0.0)
    return weighted(ops, ops.where(nonzero, ops.div(ops.sin(x), x), 1.0), i["w"])


_TIES = {"x": [[0.5, -1.0, 2.0, 0.0], [1.5, 1.5, -3.0, 0.25], [0.0, -0.7, 1.0, 2.0]],
         "y": [[0.5, 1.0, 2.0, 0.0], [-1.5, 1.5, -3.0, 0.5], [0.1, -0.7, 1.0, 3.0]]}
_NEAR_ZERO = np.array([[1e-12, -1e-12, 1e-8, 0.0], [1e-300, 3e-10, -5e-13, 2e-16], [0.5, 1e-6, -1e-6, 1e-12]])

CASES = [
    *[_case(op, uniform(*domain), unary(op), f"{op}(x) at random points in {domain}")
      for op, domain in _UNARY],
    _case("pow", uniform(0.5, 2.0, names=("x", "y")), _pow_loss,
          "pow(x, y) with a tensor exponent: gradients in base and exponent"),
    _case("atan2", uniform(-2.0, 2.0, names=("x", "y")), binary("atan2"),
          "atan2(x, y) at random points away from the origin and the branch cut"),
    _case("maximum", uniform(-2.0, 2.0, names=("x", "y")), binary("maximum"), "maximum(x, y), no ties"),
    _case("minimum", uniform(-2.0, 2.0, names=("x", "y")), binary("minimum"), "minimum(x, y), no ties"),
    _case("clip", uniform(-1.0, 1.0), _clip_loss, "clip(x, -0.5, 0.5) at random points"),
    _case("broadcast_arith", _broadcast_make, _broadcast_loss,
          "add, sub, mul, div, square, neg with a (4,) operand broadcast against (3, 4)"),
    # ---- edge points --------------------------------------------------------------
    _edge("abs_at_zero", points(x=KINKS), unary("abs"), "abs at exact zeros: the subgradient chosen at 0"),
    _edge("clip_at_bounds", points(x=[[-0.5, 0.5, 0.0, -1.0], [0.5, -0.5, 1.0, 0.2],
                                      [-0.5, 0.4999, 0.5, 0.7]]), _clip_loss,
          "clip(x, -0.5, 0.5) with x exactly on the bounds: 1, 0 or 1/2 there"),
    _edge("maximum_ties", points(**_TIES), binary("maximum"),
          "maximum(x, y) where x == y: the gradient split between the operands"),
    _edge("minimum_ties", points(**_TIES), binary("minimum"), "minimum(x, y) where x == y"),
    _edge("floor_round_at_jumps", points(x=[[1.0, -2.0, 0.5, 1.5], [2.5, -0.5, 0.0, 3.0],
                                            [0.49, 1.2, -1.5, 2.0]]),
          lambda ops, p, i: weighted(ops, ops.add(ops.floor(p["x"]), ops.round(p["x"])), i["w"]),
          "floor and round at integers and half-integers (jumps): derivative 0 or undefined"),
    _edge("log1p_expm1_tiny", points(x=_NEAR_ZERO),
          lambda ops, p, i: weighted(ops, ops.add(ops.log1p(p["x"]), ops.expm1(p["x"])), i["w"]),
          "log1p and expm1 at 1e-12, 1e-300, 0 and -1e-12: derivatives 1 to full precision"),
    _edge("pow_base_zero", points(x=[[0.0, 0.0, 1.5, 2.0], [0.0, 0.5, 0.0, 3.0], [1.0, 0.0, 2.5, 0.0]],
                                  y=[[2.0, 3.0, 0.5, 2.0], [1.0, 2.0, 2.0, -1.0], [0.0, 4.0, 1.0, 3.0]]),
          _pow_loss, "pow(0, y) for integer y >= 1 (defined on both sides of 0): d/dy is "
                     "0 * log(0), which must come out 0, not NaN"),
    _edge("atan2_origin_and_cut", points(x=[[0.0, 0.0, 1.0, -1.0], [2.0, 0.5, 0.0, -2.0],
                                            [1.0, -1.0, 0.0, 3.0]],
                                         y=[[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, -3.0, -2.0],
                                            [1.0, 1.0, 2.0, 0.5]]),
          binary("atan2"), "atan2(x, y) at the origin (undefined) and on its branch cut (x = 0, y < 0)"),
    _edge("sqrt_where_negative", points(x=[[-1.0, 0.0, 4.0, -2.0], [1.0, -0.5, 0.0, 2.0],
                                           [-3.0, 0.25, 9.0, 0.0]]),
          _sqrt_where_loss, "where(x > 0, sqrt(x), 0) at x <= 0: sqrt's NaN/inf derivative in the "
                            "unselected branch times a zero cotangent"),
    _edge("log_where_zero", points(x=[[0.0, 1.0, -1.0, 2.0], [0.0, 0.5, 3.0, -2.0],
                                      [1.5, 0.0, 0.1, 4.0]]),
          _log_where_loss, "where(x > 0, log(x), 0) at x <= 0: log's inf/NaN in the unselected branch"),
    _edge("sinc_where_zero", points(x=[[0.0, 1.0, -1.0, 2.0], [0.5, 0.0, 3.0, -2.0],
                                       [1.5, -0.3, 0.0, 4.0]]),
          _sinc_where_loss, "sinc as where(|x| > 0, sin(x)/x, 1) at x = 0: 0/0 in the unselected branch"),
]
