"""Multi-head self-attention and a post-norm transformer encoder block, natively in each framework.

Canonical attention parameters follow torch's packing, in the (in, out) layout of every dense
kernel here: ``in_proj_w`` (E, 3E) with columns q | k | v (torch's in_proj_weight (3E, E) is its
transpose, declared in ``layout``), ``in_proj_b`` (3E,), ``out_w`` (E, E), ``out_b`` (E,).
Head h owns columns h*head_dim:(h+1)*head_dim of each projection (torch's view(.., heads, head_dim)).

Keras' MultiHeadAttention holds separate query/key/value EinsumDense kernels (E, heads, head_dim)
with (heads, head_dim) biases and an output kernel (heads, head_dim, E): the TF function slices
the packed projection and reshapes it, with differentiable ops, so gradients reach the packed
canonical parameters. JAX is written by hand. Dropout is 0; LayerNorm eps is 1e-5 everywhere.
"""
from functools import lru_cache

import numpy as np

from harness import Case

from cases.models_common import dense_init, keras_built, keras_call, keras_dtype, torch_call

BATCH, SEQ, EMBED, HEADS, FF = 2, 4, 8, 2, 16
HEAD_DIM = EMBED // HEADS
LN_EPS = 1e-5


def _attention_params(rng):
    # torch's init: xavier_uniform for the packed projection, zeros for its bias; random biases
    # here so the bias gradients are not trivially equal
    bound = np.sqrt(6 / (EMBED + 3 * EMBED))
    params = {"in_proj_w": rng.uniform(-bound, bound, (EMBED, 3 * EMBED)),
              "in_proj_b": 0.1 * rng.standard_normal(3 * EMBED)}
    params["out_w"], params["out_b"] = dense_init(rng, EMBED, EMBED)
    return params


def mha_make(rng):
    params = _attention_params(rng)
    inputs = {"x": rng.standard_normal((BATCH, SEQ, EMBED)), "y": rng.standard_normal((BATCH, SEQ, EMBED))}
    return params, inputs


def encoder_make(rng):
    params = _attention_params(rng)
    params["ff1_w"], params["ff1_b"] = dense_init(rng, EMBED, FF)
    params["ff2_w"], params["ff2_b"] = dense_init(rng, FF, EMBED)
    for k in (1, 2):
        params[f"ln{k}_g"] = 1 + 0.1 * rng.standard_normal(EMBED)
        params[f"ln{k}_b"] = 0.1 * rng.standard_normal(EMBED)
    inputs = {"x": rng.standard_normal((BATCH, SEQ, EMBED)), "y": rng.standard_normal((BATCH, SEQ, EMBED))}
    return params, inputs


_MHA_TORCH_NAMES = {"in_proj_weight": "in_proj_w", "in_proj_bias": "in_proj_b",
                    "out_proj.weight": "out_w", "out_proj.bias": "out_b"}
_ENCODER_TORCH_NAMES = {
    **{f"self_attn.{k}": v for k, v in _MHA_TORCH_NAMES.items()},
    "linear1.weight": "ff1_w", "linear1.bias": "ff1_b", "linear2.weight": "ff2_w", "linear2.bias": "ff2_b",
    "norm1.weight": "ln1_g", "norm1.bias": "ln1_b", "norm2.weight": "ln2_g", "norm2.bias": "ln2_b"}
MHA_LAYOUT = {"torch": {"in_proj_w": (1, 0), "out_w": (1, 0)}}
ENCODER_LAYOUT = {"torch": {**MHA_LAYOUT["torch"], "ff1_w": (1, 0), "ff2_w": (1, 0)}}


# ---- torch -----------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _torch_mha():
    import torch.nn as nn
    return nn.MultiheadAttention(EMBED, HEADS, dropout=0.0, batch_first=True, device="meta"), nn.MSELoss()


def mha_torch(p, i):
    mha, mse = _torch_mha()
    x = i["x"]
    # torch's default need_weights=True takes the explicit softmax(QK^T)V path (forward mode works);
    # transformer_encoder's layer calls it with need_weights=False, the fused SDPA kernel
    out, _ = torch_call(mha, p, _MHA_TORCH_NAMES, x, x, x)
    return mse(out, i["y"])


@lru_cache(maxsize=None)
def _torch_encoder():
    import torch.nn as nn
    layer = nn.TransformerEncoderLayer(EMBED, HEADS, dim_feedforward=FF, dropout=0.0, activation="relu",
                                       layer_norm_eps=LN_EPS, batch_first=True, norm_first=False, device="meta")
    return layer, nn.MSELoss()  # a fresh module is in training mode: no fused fast path


def encoder_torch(p, i):
    layer, mse = _torch_encoder()
    return mse(torch_call(layer, p, _ENCODER_TORCH_NAMES, i["x"]), i["y"])


# ---- keras -----------------------------------------------------------------------------------
def keras_mha_weights(p):
    """Packed (E, 3E) projection -> Keras' query/key/value (E, heads, head_dim) kernels and
    (heads, head_dim) biases; (E, E) output -> (heads, head_dim, E)."""
    import tensorflow as tf
    w = {}
    for k, name in enumerate(("query", "key", "value")):
        cols = slice(k * EMBED, (k + 1) * EMBED)
        w[f"{name}/kernel"] = tf.reshape(p["in_proj_w"][:, cols], (EMBED, HEADS, HEAD_DIM))
        w[f"{name}/bias"] = tf.reshape(p["in_proj_b"][cols], (HEADS, HEAD_DIM))
    w["attention_output/kernel"] = tf.reshape(p["out_w"], (HEADS, HEAD_DIM, EMBED))
    w["attention_output/bias"] = p["out_b"]
    return w


@lru_cache(maxsize=None)
def keras_mha(dtype):
    import keras
    mha = keras.layers.MultiHeadAttention(HEADS, HEAD_DIM, dropout=0.0, dtype=dtype)
    return keras_built(mha, (None, SEQ, EMBED), (None, SEQ, EMBED)), keras.losses.MeanSquaredError(dtype=dtype)


def mha_tensorflow(p, i):
    mha, mse = keras_mha(keras_dtype(p["in_proj_w"]))
    x = i["x"]
    return mse(i["y"], keras_call(mha, keras_mha_weights(p), x, x))


@lru_cache(maxsize=None)
def _keras_encoder(dtype):
    import keras
    L = keras.layers
    mha, mse = keras_mha(dtype)
    ln1 = keras_built(L.LayerNormalization(epsilon=LN_EPS, dtype=dtype), (None, SEQ, EMBED))
    ln2 = keras_built(L.LayerNormalization(epsilon=LN_EPS, dtype=dtype), (None, SEQ, EMBED))
    ff1 = keras_built(L.Dense(FF, activation="relu", dtype=dtype), (None, SEQ, EMBED))
    ff2 = keras_built(L.Dense(EMBED, dtype=dtype), (None, SEQ, FF))
    return mha, ln1, ln2, ff1, ff2, mse


def encoder_tensorflow(p, i):
    """torch's post-norm block: x = LN1(x + SA(x)); x = LN2(x + FF(x)), composed from Keras layers."""
    mha, ln1, ln2, ff1, ff2, mse = _keras_encoder(keras_dtype(p["in_proj_w"]))
    x = i["x"]
    x = keras_call(ln1, {"gamma": p["ln1_g"], "beta": p["ln1_b"]}, x + keras_call(mha, keras_mha_weights(p), x, x))
    ff = keras_call(ff1, {"kernel": p["ff1_w"], "bias": p["ff1_b"]}, x)
    ff = keras_call(ff2, {"kernel": p["ff2_w"], "bias": p["ff2_b"]}, ff)
    x = keras_call(ln2, {"gamma": p["ln2_g"], "beta": p["ln2_b"]}, x + ff)
    return mse(i["y"], x)


# ---- jax -------------------------------------------------------------------------------------
def _jax_attention(p, x):
    import jax
    import jax.numpy as jnp
    b, t, _ = x.shape
    q, k, v = jnp.split(x @ p["in_proj_w"] + p["in_proj_b"], 3, axis=-1)
    q, k, v = (a.reshape(b, t, HEADS, HEAD_DIM) for a in (q, k, v))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(HEAD_DIM)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v).reshape(b, t, EMBED)
    return ctx @ p["out_w"] + p["out_b"]


def _jax_layer_norm(x, g, b):
    import jax.numpy as jnp
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + LN_EPS) * g + b


def mha_jax(p, i):
    import jax.numpy as jnp
    return jnp.mean((_jax_attention(p, i["x"]) - i["y"]) ** 2)


def encoder_jax(p, i):
    import jax
    import jax.numpy as jnp
    x = i["x"]
    x = _jax_layer_norm(x + _jax_attention(p, x), p["ln1_g"], p["ln1_b"])
    ff = jax.nn.relu(x @ p["ff1_w"] + p["ff1_b"]) @ p["ff2_w"] + p["ff2_b"]
    x = _jax_layer_norm(x + ff, p["ln2_g"], p["ln2_b"])
    return jnp.mean((x - i["y"]) ** 2)


CASES = [
    Case(
        name="mha_self",
        doc="Multi-head self-attention (E 8, 2 heads) + MSE: nn.MultiheadAttention (packed in_proj) vs keras "
            "MultiHeadAttention (separate q/k/v/output kernels) vs jax by hand.",
        make=mha_make,
        native={"torch": mha_torch, "tensorflow": mha_tensorflow, "jax": mha_jax},
        layout=MHA_LAYOUT,
        tags=("models", "native", "attention", "gpu"),
    ),
    Case(
        name="transformer_encoder",
        doc="Post-norm transformer encoder block (E 8, 2 heads, ff 16, relu, dropout 0) + MSE: "
            "nn.TransformerEncoderLayer vs keras MultiHeadAttention + LayerNormalization + Dense vs jax.",
        make=encoder_make,
        native={"torch": encoder_torch, "tensorflow": encoder_tensorflow, "jax": encoder_jax},
        layout=ENCODER_LAYOUT,
        tags=("models", "native", "attention", "transformer"),
    ),
]
