"""Op sweep, nn functional: softmax family, losses, convolution, pooling, normalisation,
dropout, embedding and attention, in canonical layout (NCHW, OIHW, (batch, heads, seq, dim)).

Edge points: huge logits, -inf masks, ties inside a pooling window, a constant row under layer
norm, a large mean under layer norm (a one-pass variance cancels catastrophically), and a
query that may attend to nothing. The `default-semantics` cases call each framework's own
layer or loss with its defaults: Keras' norm epsilons are 1e-3 where torch's and jax's are
1e-5, and Keras' sparse cross-entropy expects probabilities unless told from_logits=True.
"""
from functools import lru_cache

import numpy as np

from ._opcase import SINGLE_OP_FLOAT64, family, point_rng, weighted

_LABELS = np.array([0, 3, 1, 1, 2])

_case, _edge = family("nn")


def _make(params, out_shape=None, fixed=None, **inputs):
    """make(): params {name: shape} drawn standard normal (or given arrays from ``fixed``),
    weights w of out_shape, other inputs fixed arrays or drawn by callables. With every param
    fixed, the rest is fixed too (point_rng)."""
    def make(rng):
        if not params:
            rng = point_rng()
        made = {k: rng.standard_normal(s) for k, s in params.items()}
        made.update({k: np.array(v, dtype=float) for k, v in (fixed or {}).items()})
        ins = {} if out_shape is None else {"w": rng.standard_normal(out_shape)}
        ins.update({k: v(rng) if callable(v) else np.asarray(v) for k, v in inputs.items()})
        return made, ins
    return make


def _op(name, *args, **kwargs):
    """loss(): weighted(ops.<name>(*args, **kwargs)), a string arg naming a param or input."""
    def loss(ops, p, i):
        values = [(p[a] if a in p else i[a]) if isinstance(a, str) else a for a in args]
        return weighted(ops, getattr(ops, name)(*values, **kwargs), i["w"])
    return loss


def _xent(smoothing):
    return lambda ops, p, i: ops.cross_entropy(p["logits"], i["labels"], smoothing)


def _masked_softmax_loss(ops, p, i):
    return weighted(ops, ops.softmax(ops.add(p["x"], i["mask"]), axis=-1), i["w"])


def _offset_layer_norm_loss(ops, p, i):
    # the offset is an input, so finite differences step on the scale of the spread, not of 100
    return weighted(ops, ops.layer_norm(ops.add(p["x"], i["offset"]), p["weight"], p["bias"], 1e-5), i["w"])


def _batch_norm_eval_loss(ops, p, i):
    y = ops.batch_norm(p["x"], p["weight"], p["bias"], 1e-5, i["mean"], i["var"])
    return weighted(ops, y, i["w"])


_MASK = np.array([[0.0, -np.inf, 0.0, 0.0], [-np.inf, -np.inf, 0.0, -np.inf], [0.0, 0.0, 0.0, -np.inf]])
_ATTEND = np.array([[True, False, True, True], [False, False, True, False]])
_NOWHERE = np.array([[True, False, True, True], [False, False, False, False]])
_POOL_TIES = np.tile(np.array([[1.0, 1.0, 0.5, 2.0], [1.0, 0.0, 2.0, 2.0],
                               [-1.0, 3.0, 0.0, 0.0], [3.0, 3.0, 0.0, 0.0]]), (1, 2, 1, 1))

# ---- native defaults -------------------------------------------------------------------


def _torch_layer_norm(p, i):
    import torch
    y = torch.nn.functional.layer_norm(p["x"], p["x"].shape[-1:], p["weight"], p["bias"])
    return torch.sum(y * i["w"])


def _jax_layer_norm(p, i):
    import jax
    return ((jax.nn.standardize(p["x"], axis=-1) * p["weight"] + p["bias"]) * i["w"]).sum()


@lru_cache(maxsize=None)
def _keras_layer(kind, dtype, shape):
    import keras
    layer = (keras.layers.LayerNormalization(dtype=dtype) if kind == "layer"
             else keras.layers.BatchNormalization(axis=1, dtype=dtype))  # canonical NCHW: channels on 1
    layer.build(shape)
    return layer


def _tf_layer_norm(p, i):
    import tensorflow as tf
    layer = _keras_layer("layer", p["x"].dtype.name, tuple(p["x"].shape))
    y, _ = layer.stateless_call([p["weight"], p["bias"]], [], p["x"])
    return tf.reduce_sum(y * i["w"])


def _torch_batch_norm(p, i):
    import torch
    y = torch.nn.functional.batch_norm(p["x"], None, None, p["weight"], p["bias"], training=True)
    return torch.sum(y * i["w"])


def _jax_batch_norm(p, i):
    import jax
    y = jax.nn.standardize(p["x"], axis=(0, 2, 3))
    return ((y * p["weight"][:, None, None] + p["bias"][:, None, None]) * i["w"]).sum()


def _tf_batch_norm(p, i):
    import tensorflow as tf
    layer = _keras_layer("batch", p["x"].dtype.name, tuple(p["x"].shape))
    stats = [v.value for v in layer.non_trainable_variables]
    y, _ = layer.stateless_call([p["weight"], p["bias"]], stats, p["x"], training=True)
    return tf.reduce_sum(y * i["w"])


def _torch_xent(p, i):
    import torch
    return torch.nn.functional.cross_entropy(p["logits"], i["labels"])


def _tf_xent(p, i):
    import keras
    return keras.losses.SparseCategoricalCrossentropy(dtype=p["logits"].dtype.name)(i["labels"], p["logits"])


CASES = [
    _case("softmax", _make({"x": (3, 4)}, (3, 4)), _op("softmax", "x", axis=-1), "softmax over the last axis",
          ("quick",)),
    _case("log_softmax", _make({"x": (3, 4)}, (3, 4)), _op("log_softmax", "x", axis=0),
          "log_softmax over axis 0"),
    _case("mse", _make({"pred": (3, 4)}, target=lambda rng: rng.standard_normal((3, 4))),
          lambda ops, p, i: ops.mse(p["pred"], i["target"]), "mean squared error over all elements"),
    _case("cross_entropy", _make({"logits": (5, 4)}, labels=_LABELS), _xent(0.0),
          "softmax cross-entropy from logits with integer labels, mean over the batch",
          ("default",)),
    _case("cross_entropy_smoothed", _make({"logits": (5, 4)}, labels=_LABELS), _xent(0.1),
          "cross-entropy with label smoothing 0.1"),
    _case("conv1d", _make({"x": (1, 2, 7), "w_conv": (3, 2, 3)}, (1, 3, 4)),
          _op("conv1d", "x", "w_conv", stride=2, padding=1), "conv1d, stride 2, padding 1"),
    _case("conv2d", _make({"x": (1, 2, 5, 4), "w_conv": (3, 2, 3, 2)}, (1, 3, 3, 5)),
          _op("conv2d", "x", "w_conv", stride=(2, 1), padding=1), "conv2d NCHW/OIHW, stride (2, 1), padding 1",
          ("default",)),
    _case("conv2d_dilated", _make({"x": (1, 2, 5, 5), "w_conv": (2, 2, 3, 3)}, (1, 2, 5, 5)),
          _op("conv2d", "x", "w_conv", padding=2, dilation=2), "conv2d, dilation 2, padding 2"),
    _case("conv2d_strided_dilated", _make({"x": (1, 2, 5, 5), "w_conv": (2, 2, 3, 3)}, (1, 2, 2, 2)),
          _op("conv2d", "x", "w_conv", stride=2, padding=1, dilation=2),
          "conv2d, stride 2 and dilation 2 together (tf.nn.convolution refuses the pair)"),
    _case("max_pool2d", _make({"x": (1, 2, 4, 4)}, (1, 2, 2, 2)), _op("max_pool2d", "x", 2),
          "max pooling 2x2, stride 2, no ties"),
    _case("max_pool2d_overlap", _make({"x": (1, 2, 5, 5)}, (1, 2, 2, 2)), _op("max_pool2d", "x", 3, 2),
          "max pooling 3x3, stride 2: overlapping windows share elements"),
    _case("avg_pool2d", _make({"x": (1, 2, 4, 5)}, (1, 2, 3, 3)), _op("avg_pool2d", "x", (2, 3), 1),
          "average pooling 2x3, stride 1"),
    _case("layer_norm", _make({"x": (3, 4), "weight": (4,), "bias": (4,)}, (3, 4)),
          _op("layer_norm", "x", "weight", "bias", eps=1e-5), "layer norm over the last axis, eps 1e-5 explicit"),
    _case("batch_norm_train", _make({"x": (4, 2, 2, 2), "weight": (2,), "bias": (2,)}, (4, 2, 2, 2)),
          _op("batch_norm", "x", "weight", "bias", eps=1e-5), "batch norm with batch statistics, eps 1e-5 explicit"),
    _case("batch_norm_eval", _make({"x": (4, 2, 2, 2), "weight": (2,), "bias": (2,)}, (4, 2, 2, 2),
                                   mean=lambda rng: rng.standard_normal(2),
                                   var=lambda rng: rng.uniform(0.5, 2.0, 2)),
          _batch_norm_eval_loss, "batch norm with given running mean and var (eval)"),
    _case("dropout", _make({"x": (3, 4)}, (3, 4), mask=lambda rng: rng.random((3, 4)) > 0.25),
          _op("dropout", "x", "mask", p=0.25), "dropout p=0.25 with a fixed keep-mask"),
    _case("embedding", _make({"table": (6, 3)}, (2, 4, 3), ids=np.array([[0, 5, 5, 2], [2, 2, 1, 0]])),
          _op("embedding", "table", "ids"), "embedding lookup with repeated ids (the gradient accumulates)"),
    _case("attention", _make({"q": (1, 2, 2, 3), "k": (1, 2, 4, 3), "v": (1, 2, 4, 3)}, (1, 2, 2, 3)),
          _op("scaled_dot_product_attention", "q", "k", "v"), "scaled dot-product attention, 2 heads",
          tolerance=SINGLE_OP_FLOAT64),
    _case("attention_masked", _make({"q": (1, 2, 2, 3), "k": (1, 2, 4, 3), "v": (1, 2, 4, 3)}, (1, 2, 2, 3),
                                    mask=_ATTEND),
          _op("scaled_dot_product_attention", "q", "k", "v", "mask"), "attention with a boolean mask",
          tolerance=SINGLE_OP_FLOAT64),
    # ---- edge points --------------------------------------------------------------
    _edge("softmax_large", _make({}, (3, 4), fixed={"x": 1e3 + np.array([[0.0, 1, 2, 3], [3, 3, 0, -1], [0.5, 0, 0, 2]])}),
          _op("softmax", "x", axis=-1), "softmax at logits around 1e3: exp overflows unless shifted"),
    _edge("log_softmax_large", _make({}, (3, 4), fixed={"x": -1e3 * np.eye(3, 4) + 5e2}),
          _op("log_softmax", "x", axis=-1), "log_softmax with logits 1e3 apart"),
    _edge("softmax_masked", _make({"x": (3, 4)}, (3, 4), mask=_MASK), _masked_softmax_loss,
          "softmax of x + mask with -inf entries: their probability and gradient are exactly 0"),
    _edge("cross_entropy_large_logits", _make({}, fixed={"logits": 1e3 * np.eye(5, 4)[[1, 3, 1, 0, 2]]},
                                              labels=_LABELS), _xent(0.1),
          "cross-entropy with logits of 1e3, some labels wrong: the loss is ~1e3, no overflow"),
    _edge("max_pool2d_ties", _make({}, (1, 2, 2, 2), fixed={"x": _POOL_TIES}), _op("max_pool2d", "x", 2),
          "max pooling where windows hold tied maxima: one element or shared"),
    _edge("layer_norm_constant_row",
          _make({"weight": (4,), "bias": (4,)}, (3, 4),
                fixed={"x": [[2.0, 2.0, 2.0, 2.0], [0.5, -1.0, 0.3, 2.0], [0.0, 0.0, 0.0, 1e-4]]}),
          _op("layer_norm", "x", "weight", "bias", eps=1e-5), "layer norm of a constant row: eps alone keeps it finite"),
    _edge("layer_norm_large_mean", _make({"x": (3, 4), "weight": (4,), "bias": (4,)}, (3, 4), offset=100.0),
          _offset_layer_norm_loss,
          "layer norm of rows with mean 100 and spread 1: a one-pass variance (mean(x^2) - mean^2) "
          "loses 1e4 x eps of precision, a two-pass one does not"),
    _edge("attention_fully_masked_row", _make({"q": (1, 2, 2, 3), "k": (1, 2, 4, 3), "v": (1, 2, 4, 3)},
                                              (1, 2, 2, 3), mask=_NOWHERE),
          _op("scaled_dot_product_attention", "q", "k", "v", "mask"),
          "attention where one query may attend to nothing: output 0, uniform, or NaN", ("default-semantics",),
          tolerance=SINGLE_OP_FLOAT64),
    # ---- native defaults --------------------------------------------------------------
    _case("layer_norm_native_default", _make({"x": (3, 4), "weight": (4,), "bias": (4,)}, (3, 4)), None,
          "each framework's layer norm with its default eps: torch 1e-5, jax.nn.standardize 1e-5, "
          "keras.layers.LayerNormalization 1e-3", ("default-semantics",),
          native={"torch": _torch_layer_norm, "jax": _jax_layer_norm, "tensorflow": _tf_layer_norm}),
    _case("batch_norm_native_default", _make({"x": (4, 2, 2, 2), "weight": (2,), "bias": (2,)}, (4, 2, 2, 2)),
          None, "each framework's training-mode batch norm with its default eps: torch 1e-5, "
                "jax.nn.standardize 1e-5, keras.layers.BatchNormalization 1e-3", ("default-semantics",),
          native={"torch": _torch_batch_norm, "jax": _jax_batch_norm, "tensorflow": _tf_batch_norm}),
    _case("cross_entropy_native_default", _make({"logits": (5, 4)}, labels=_LABELS), None,
          "each framework's sparse cross-entropy with its defaults: torch's F.cross_entropy takes logits, "
          "keras' SparseCategoricalCrossentropy probabilities (from_logits=False); jax has none",
          ("default-semantics",), native={"torch": _torch_xent, "tensorflow": _tf_xent}),
]
