"""One-layer LSTM and GRU over a short sequence, natively in each framework, + MSE on the outputs.

The canonical parameterisation is torch's: gate order i, f, g, o (LSTM) and r, z, n (GRU), two
biases b_ih and b_hh. Kernels are canonical (in, gates*H) and (H, gates*H) (torch stores the
transpose, declared in ``layout``). Keras is translated explicitly *inside* the TF function, with
differentiable ops, so the gradient flows back to the canonical parameters:
  - LSTM: Keras' gate order i, f, c, o is torch's i, f, g, o, so the kernels pass as they are;
    Keras has one bias, so it gets b_ih + b_hh.
  - GRU: Keras (reset_after=True, torch's formulation) orders gates z, r, h against torch's
    r, z, n, so the kernel columns and both biases are reordered; its (2, 3H) bias stacks the
    input and recurrent biases.
JAX is written by hand with lax.scan. Keras layers use unroll=True (a short sequence; no
while_loop, which keeps forward mode and vectorized_map simple, and no cuDNN path).
"""
from functools import lru_cache

import numpy as np

from harness import Case

from cases.models_common import keras_built, keras_call, keras_dtype, torch_call, uniform

BATCH, SEQ, IN, HIDDEN = 2, 5, 3, 4

_TORCH_NAMES = {"weight_ih_l0": "w_ih", "weight_hh_l0": "w_hh", "bias_ih_l0": "b_ih", "bias_hh_l0": "b_hh"}
LAYOUT = {"torch": {"w_ih": (1, 0), "w_hh": (1, 0)}}


def _make(gates):
    def make(rng):
        bound = 1 / np.sqrt(HIDDEN)  # torch's init for LSTM/GRU
        params = {"w_ih": uniform(rng, bound, (IN, gates * HIDDEN)),
                  "w_hh": uniform(rng, bound, (HIDDEN, gates * HIDDEN)),
                  "b_ih": uniform(rng, bound, (gates * HIDDEN,)),
                  "b_hh": uniform(rng, bound, (gates * HIDDEN,))}
        inputs = {"x": rng.standard_normal((BATCH, SEQ, IN)), "y": 0.5 * rng.standard_normal((BATCH, SEQ, HIDDEN))}
        return params, inputs
    return make


lstm_make, gru_make = _make(4), _make(3)


# ---- torch -----------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _torch_rnn(kind):
    import torch.nn as nn
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
    return cls(IN, HIDDEN, num_layers=1, batch_first=True, device="meta"), nn.MSELoss()


def lstm_torch(p, i):
    rnn, mse = _torch_rnn("lstm")
    out, _ = torch_call(rnn, p, _TORCH_NAMES, i["x"])
    return mse(out, i["y"])


def gru_torch(p, i):
    rnn, mse = _torch_rnn("gru")
    out, _ = torch_call(rnn, p, _TORCH_NAMES, i["x"])
    return mse(out, i["y"])


# ---- keras -----------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def keras_rnn(kind, dtype):
    import keras
    if kind == "lstm":
        layer = keras.layers.LSTM(HIDDEN, return_sequences=True, unroll=True, dtype=dtype)
    else:
        layer = keras.layers.GRU(HIDDEN, return_sequences=True, unroll=True, reset_after=True, dtype=dtype)
    return keras_built(layer, (None, SEQ, IN)), keras.losses.MeanSquaredError(dtype=dtype)


def lstm_keras_weights(p):
    """torch LSTM parameters -> Keras LSTM variables (same gate order; the two biases summed)."""
    return {"kernel": p["w_ih"], "recurrent_kernel": p["w_hh"], "bias": p["b_ih"] + p["b_hh"]}


def gru_torch_to_keras_gates(w):
    """Columns (or a bias) in torch's gate order r, z, n -> Keras' z, r, h, along the last axis."""
    import tensorflow as tf
    r, z, n = tf.split(w, 3, axis=-1)
    return tf.concat([z, r, n], axis=-1)


def gru_keras_weights(p):
    import tensorflow as tf
    return {"kernel": gru_torch_to_keras_gates(p["w_ih"]),
            "recurrent_kernel": gru_torch_to_keras_gates(p["w_hh"]),
            "bias": tf.stack([gru_torch_to_keras_gates(p["b_ih"]), gru_torch_to_keras_gates(p["b_hh"])])}


def lstm_tensorflow(p, i):
    layer, mse = keras_rnn("lstm", keras_dtype(p["w_ih"]))
    return mse(i["y"], keras_call(layer, lstm_keras_weights(p), i["x"]))


def gru_tensorflow(p, i):
    layer, mse = keras_rnn("gru", keras_dtype(p["w_ih"]))
    return mse(i["y"], keras_call(layer, gru_keras_weights(p), i["x"]))


# ---- jax -------------------------------------------------------------------------------------
def _scan(cell, carry, x):
    from jax import lax
    _, hs = lax.scan(cell, carry, x.transpose(1, 0, 2))  # time-major for the scan
    return hs.transpose(1, 0, 2)


def lstm_jax(p, i):
    import jax
    import jax.numpy as jnp
    x = i["x"]
    zeros = jnp.zeros((x.shape[0], HIDDEN), x.dtype)

    def cell(carry, xt):
        h, c = carry
        gates = xt @ p["w_ih"] + p["b_ih"] + h @ p["w_hh"] + p["b_hh"]
        gi, gf, gg, go = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(gf) * c + jax.nn.sigmoid(gi) * jnp.tanh(gg)
        h = jax.nn.sigmoid(go) * jnp.tanh(c)
        return (h, c), h

    return jnp.mean((_scan(cell, (zeros, zeros), x) - i["y"]) ** 2)


def gru_jax(p, i):
    import jax
    import jax.numpy as jnp
    x = i["x"]

    def cell(h, xt):
        xr, xz, xn = jnp.split(xt @ p["w_ih"] + p["b_ih"], 3, axis=-1)
        hr, hz, hn = jnp.split(h @ p["w_hh"] + p["b_hh"], 3, axis=-1)
        r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        return h, h

    return jnp.mean((_scan(cell, jnp.zeros((x.shape[0], HIDDEN), x.dtype), x) - i["y"]) ** 2)


CASES = [
    Case(
        name="lstm_seq",
        doc="One-layer LSTM (in 3, hidden 4, 5 steps) + MSE on the outputs: nn.LSTM, keras LSTM (biases "
            "summed), jax lax.scan.",
        make=lstm_make,
        native={"torch": lstm_torch, "tensorflow": lstm_tensorflow, "jax": lstm_jax},
        layout=LAYOUT,
        tags=("models", "native", "rnn", "gpu"),
    ),
    Case(
        name="gru_seq",
        doc="One-layer GRU (in 3, hidden 4, 5 steps) + MSE on the outputs: nn.GRU, keras GRU reset_after "
            "(gates r,z,n -> z,r,h), jax lax.scan.",
        make=gru_make,
        native={"torch": gru_torch, "tensorflow": gru_tensorflow, "jax": gru_jax},
        layout=LAYOUT,
        tags=("models", "native", "rnn"),
    ),
]
