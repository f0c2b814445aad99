"""Op sweep, reductions: random points, ties, zeros, huge magnitudes and masked entries.

Ties are where reductions differ: torch.max(x, dim) sends a tie's gradient to the one index
it returns, while amax (and jax's and TF's max) share it evenly. Zeros test prod and cumprod
(a gradient formula that divides by x fails there); a zero vector tests the 2-norm (whose
derivative x/|x| is 0/0). var and std take ddof explicitly; the `default-semantics` cases call
each framework's var/std with its default ddof (torch unbiased, jax and TF biased).
"""
import numpy as np

from ._opcase import family, normal, points, unary, weighted

_ROW = (3,)   # shape of a reduction over axis 1 of a (3, 4) input
_COL = (4,)   # ... over axis 0

_TIES = [[1.0, 3.0, 3.0, -2.0], [0.5, 0.5, 0.5, 0.5], [-1.0, 2.0, -1.0, 0.0]]
_ZEROS = [[0.0, 1.5, -2.0, 0.7], [0.0, 0.0, 1.2, -0.8], [1.1, -0.9, 1.3, 0.6]]
_MASK = np.array([[0.0, -np.inf, 0.0, 0.0], [-np.inf, -np.inf, 0.0, -np.inf], [0.0, 0.0, 0.0, 0.0]])

_case, _edge = family("reduce")


def _sum_mean_loss(ops, p, i):
    x = p["x"]
    rows = ops.sum(x, axis=1)
    cols = ops.mean(x, axis=0, keepdims=True)
    return ops.add(weighted(ops, ops.square(rows), i["v"]), weighted(ops, ops.mul(cols, x), i["w"]))


def _sum_mean_make(rng):
    return {"x": rng.standard_normal((3, 4))}, {"w": rng.standard_normal((3, 4)), "v": rng.standard_normal(_ROW)}


def _masked_lse_loss(ops, p, i):
    return weighted(ops, ops.logsumexp(ops.add(p["x"], i["mask"]), axis=1), i["w"])


def _masked_lse_make(rng):
    return {"x": rng.standard_normal((3, 4))}, {"mask": _MASK.copy(), "w": rng.standard_normal(_ROW)}


def _native_var(name):
    """loss = sum(w * var(x, axis=1)) with each framework's own default ddof."""
    def torch_loss(p, i):
        import torch
        return torch.sum(getattr(torch, name)(p["x"], dim=1) * i["w"])

    def jax_loss(p, i):
        import jax.numpy as jnp
        return jnp.sum(getattr(jnp, name)(p["x"], axis=1) * i["w"])

    def tf_loss(p, i):
        import tensorflow as tf
        reduce = tf.math.reduce_variance if name == "var" else tf.math.reduce_std
        return tf.reduce_sum(reduce(p["x"], axis=1) * i["w"])
    return {"torch": torch_loss, "jax": jax_loss, "tensorflow": tf_loss}


CASES = [
    _case("sum_mean_axes", _sum_mean_make, _sum_mean_loss, "sum over axis 1 and mean over axis 0 with keepdims"),
    _case("prod", normal(out_shape=_ROW), unary("prod", axis=1), "prod over axis 1"),
    _case("prod_all", normal(out_shape=()), unary("prod"), "prod of all elements"),
    _case("max", normal(out_shape=_ROW), unary("max", axis=1), "max over axis 1, no ties", ("default",)),
    _case("min", normal(out_shape=_COL), unary("min", axis=0), "min over axis 0, no ties"),
    _case("amax", normal(out_shape=_ROW), unary("amax", axis=1), "amax over axis 1, no ties"),
    _case("amin", normal(out_shape=_COL), unary("amin", axis=0), "amin over axis 0, no ties"),
    _case("max_all", normal(out_shape=()), unary("max"), "max of all elements, no ties"),
    _case("logsumexp", normal(out_shape=_ROW), unary("logsumexp", axis=1), "logsumexp over axis 1",
          ("quick",)),
    _case("var_biased", normal(out_shape=_ROW), unary("var", ddof=0, axis=1), "var over axis 1, ddof=0 explicit"),
    _case("var_unbiased", normal(out_shape=_COL), unary("var", ddof=1, axis=0),
          "var over axis 0, ddof=1 explicit"),
    _case("std_biased", normal(out_shape=_ROW), unary("std", ddof=0, axis=1), "std over axis 1, ddof=0 explicit"),
    _case("std_unbiased", normal(out_shape=_ROW), unary("std", ddof=1, axis=1),
          "std over axis 1, ddof=1 explicit"),
    _case("norm_l1", normal(out_shape=_ROW), unary("norm", ord=1, axis=1), "1-norm of each row"),
    _case("norm_l2", normal(out_shape=_ROW), unary("norm", ord=2, axis=1), "2-norm of each row"),
    _case("norm_l3", normal(out_shape=_COL), unary("norm", ord=3, axis=0), "3-norm of each column"),
    _case("norm_linf", normal(out_shape=()), unary("norm", ord=float("inf")), "inf-norm of all elements"),
    _case("cumsum", normal(), unary("cumsum", axis=1), "cumsum along axis 1"),
    _case("cumprod", normal(), unary("cumprod", axis=0), "cumprod along axis 0"),
    # ---- edge points --------------------------------------------------------------
    _edge("max_ties", points(x=_TIES, out_shape=_ROW), unary("max", axis=1),
          "max over axis 1 with ties: torch.max(dim) routes the gradient to one index"),
    _edge("min_ties", points(x=np.negative(_TIES), out_shape=_ROW), unary("min", axis=1),
          "min over axis 1 with ties"),
    _edge("amax_ties", points(x=_TIES, out_shape=_ROW), unary("amax", axis=1),
          "amax over axis 1 with ties: the gradient shared evenly"),
    _edge("max_all_ties", points(x=[[1.0, 3.0, 3.0, -2.0], [0.5, 3.0, 0.5, 0.5], [-1.0, 2.0, 3.0, 0.0]],
                                 out_shape=()), unary("max"), "max of all elements, a three-way tie"),
    _edge("prod_with_zeros", points(x=_ZEROS, out_shape=_ROW), unary("prod", axis=1),
          "prod over rows holding one zero and two zeros: no division by x allowed"),
    _edge("cumprod_with_zeros", points(x=_ZEROS), unary("cumprod", axis=1),
          "cumprod along rows holding zeros: a gradient that divides by x is NaN there"),
    _edge("logsumexp_large", points(x=1e3 + np.array(_ZEROS), out_shape=_ROW), unary("logsumexp", axis=1),
          "logsumexp at magnitudes around 1e3: exp overflows unless shifted"),
    _edge("logsumexp_masked", _masked_lse_make, _masked_lse_loss,
          "logsumexp of x + mask with -inf entries in the mask: their gradient is exactly 0"),
    _edge("std_constant_row", points(x=[[1.0, 1.0, 1.0, 1.0], [0.5, -0.5, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
                                     out_shape=_ROW), unary("std", ddof=0, axis=1),
          "std of a constant row: sqrt at 0, derivative 0/0"),
    _edge("norm_l2_zero_row", points(x=[[0.0, 0.0, 0.0, 0.0], [0.5, -0.5, 2.0, 0.0], [3.0, 4.0, 0.0, 0.0]],
                                     out_shape=_ROW), unary("norm", ord=2, axis=1),
          "2-norm of a zero row: x/|x| is 0/0; a subgradient (0) or NaN"),
    # ---- native defaults --------------------------------------------------------------
    _case("var_native_default", normal(out_shape=_ROW), None,
          "each framework's var with its default ddof: torch.var 1, jnp.var and tf.math.reduce_variance 0",
          ("default-semantics",), native=_native_var("var")),
    _case("std_native_default", normal(out_shape=_ROW), None,
          "each framework's std with its default ddof: torch.std 1, jnp.std and tf.math.reduce_std 0",
          ("default-semantics",), native=_native_var("std")),
]
