"""Small neutral-ops cases: written once against `ops`, run natively by every framework."""
import numpy as np

from harness import Case


def _mlp_make(rng):
    params = {"w1": rng.standard_normal((6, 16)) / np.sqrt(6), "b1": 0.1 * rng.standard_normal(16),
              "w2": rng.standard_normal((16, 3)) / 4.0, "b2": 0.1 * rng.standard_normal(3)}
    inputs = {"x": rng.standard_normal((8, 6)), "y": rng.standard_normal((8, 3))}
    return params, inputs


def _mlp_loss(ops, p, i):
    hidden = ops.tanh(ops.add(ops.matmul(i["x"], p["w1"]), p["b1"]))
    return ops.mse(ops.add(ops.matmul(hidden, p["w2"]), p["b2"]), i["y"])


def _wide_make(rng):
    width, batch = 256, 128
    params = {"w1": rng.standard_normal((width, width)) / np.sqrt(width), "b1": 0.1 * rng.standard_normal(width),
              "w2": rng.standard_normal((width, width)) / np.sqrt(width), "b2": 0.1 * rng.standard_normal(width),
              "w3": rng.standard_normal((width, 8)) / np.sqrt(width)}
    inputs = {"x": rng.standard_normal((batch, width)), "y": rng.standard_normal((batch, 8))}
    return params, inputs


def _wide_loss(ops, p, i):
    h = ops.tanh(ops.add(ops.matmul(i["x"], p["w1"]), p["b1"]))
    h = ops.tanh(ops.add(ops.matmul(h, p["w2"]), p["b2"]))
    return ops.mse(ops.matmul(h, p["w3"]), i["y"])


def _xent_make(rng):
    classes, batch, features = 5, 12, 7
    labels = rng.integers(0, classes, batch)
    params = {"w": rng.standard_normal((features, classes)) / np.sqrt(features),
              "b": 0.1 * rng.standard_normal(classes)}
    inputs = {"x": rng.standard_normal((batch, features)), "onehot": np.eye(classes)[labels]}
    return params, inputs


def _xent_loss(ops, p, i):
    logits = ops.add(ops.matmul(i["x"], p["w"]), p["b"])
    picked = ops.sum(ops.mul(i["onehot"], ops.log_softmax(logits, axis=-1)), axis=-1)
    return ops.neg(ops.mean(picked))


def _chain_make(rng):
    return {"x": rng.uniform(-2.0, 2.0, (4, 5))}, {}


def _chain_loss(ops, p, i):
    x = p["x"]
    bump = ops.add(1.0, ops.exp(ops.neg(ops.square(x))))
    smooth = ops.mean(ops.div(ops.tanh(x), bump))
    return ops.add(smooth, ops.sum(ops.pow(ops.sigmoid(x), 2.0)))


CASES = [
    Case(name="mlp_tanh", doc="Two-layer tanh MLP with MSE, through the neutral ops.",
         make=_mlp_make, loss=_mlp_loss, tags=("models", "neutral", "twice-differentiable", "default", "quick", "gpu")),
    Case(name="mlp_wide", doc="Three 256-wide matmuls: where reduced-precision float32 (TF32) policies show.",
         make=_wide_make, loss=_wide_loss, tags=("models", "neutral", "gpu", "matmul")),
    Case(name="softmax_xent", doc="Linear classifier with softmax cross-entropy (log_softmax).",
         make=_xent_make, loss=_xent_loss, tags=("models", "neutral", "twice-differentiable", "default", "quick", "gpu")),
    Case(name="elementwise_chain", doc="A chain of elementwise ops: tanh, exp, div, pow, sigmoid.",
         make=_chain_make, loss=_chain_loss, tags=("ops", "neutral", "twice-differentiable", "default", "quick")),
]
