"""Op sweep, indexing and shape: gradients that must be scattered, summed or moved back.

Repeated indices in gather and take_along_axis must accumulate (a scatter-add, not a
scatter); padding, concatenation and stacking must slice the gradient back exactly.
"""
import numpy as np

from ._opcase import family, weighted

_case, _ = family("shape")


def _xy(x_shape, y_shape, out_shape, **extra):
    def make(rng):
        params = {"x": rng.standard_normal(x_shape)}
        if y_shape is not None:
            params["y"] = rng.standard_normal(y_shape)
        inputs = {"w": rng.standard_normal(out_shape)}
        inputs.update({k: v(rng) if callable(v) else np.array(v) for k, v in extra.items()})
        return params, inputs
    return make


CASES = [
    _case("gather", _xy((3, 4), None, (3, 5), idx=[3, 0, 0, 2, 3]),
          lambda ops, p, i: weighted(ops, ops.gather(p["x"], i["idx"], axis=1), i["w"]),
          "gather columns [3, 0, 0, 2, 3]: repeated indices accumulate", ()),
    _case("take_along_axis", _xy((3, 4), None, (3, 2), idx=[[1, 1], [3, 0], [2, 3]]),
          lambda ops, p, i: weighted(ops, ops.take_along_axis(p["x"], i["idx"], axis=1), i["w"]),
          "take_along_axis over axis 1, one row picking an element twice"),
    _case("where", _xy((3, 4), (3, 4), (3, 4), cond=lambda rng: rng.random((3, 4)) > 0.5),
          lambda ops, p, i: weighted(ops, ops.where(i["cond"], p["x"], p["y"]), i["w"]),
          "where(cond, x, y): each gradient masked by the condition"),
    _case("concat", _xy((3, 4), (2, 4), (5, 4)),
          lambda ops, p, i: weighted(ops, ops.concat([p["x"], p["y"]], axis=0), i["w"]),
          "concat of (3, 4) and (2, 4) along axis 0"),
    _case("stack", _xy((3, 4), (3, 4), (3, 2, 4)),
          lambda ops, p, i: weighted(ops, ops.stack([p["x"], p["y"]], axis=1), i["w"]),
          "stack of two (3, 4) along a new axis 1"),
    _case("pad", _xy((3, 4), None, (4, 7)),
          lambda ops, p, i: weighted(ops, ops.pad(p["x"], ((1, 0), (2, 1)), value=0.5), i["w"]),
          "constant padding ((1, 0), (2, 1)) with value 0.5", ("quick",)),
    _case("transpose_reshape", _xy((2, 3, 4), None, (4, 6)),
          lambda ops, p, i: weighted(ops, ops.reshape(ops.transpose(p["x"], (2, 0, 1)), (4, -1)), i["w"]),
          "transpose (2, 0, 1) then reshape to (4, 6)"),
]
