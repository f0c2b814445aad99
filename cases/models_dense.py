"""Dense models natively in each framework: an MLP with MSE, a classifier with cross-entropy,
embedding + layer norm (eps explicit and equal, and once with each framework's default eps).

torch.nn modules run through torch.func.functional_call on meta-device modules (the harness's
tensors are the parameters); Keras layers run through stateless_call, built once per dtype;
JAX is jax.numpy / jax.nn. Dense kernels are canonical (in, out); torch.nn.Linear stores
(out, in), declared in ``layout``.
"""
from functools import lru_cache

from harness import Case

from cases.models_common import dense_init, keras_built, keras_call, keras_dtype, torch_call

# ---- MLP + MSE ---------------------------------------------------------------------------
MLP_SIZES = (6, 8, 8, 3)
MLP_BATCH = 8


def mlp_make(rng):
    params = {}
    for k, (fan_in, fan_out) in enumerate(zip(MLP_SIZES[:-1], MLP_SIZES[1:]), start=1):
        params[f"w{k}"], params[f"b{k}"] = dense_init(rng, fan_in, fan_out)
    inputs = {"x": rng.standard_normal((MLP_BATCH, MLP_SIZES[0])),
              "y": rng.standard_normal((MLP_BATCH, MLP_SIZES[-1]))}
    return params, inputs


_MLP_TORCH_NAMES = {"0.weight": "w1", "0.bias": "b1", "2.weight": "w2", "2.bias": "b2",
                    "4.weight": "w3", "4.bias": "b3"}


@lru_cache(maxsize=None)
def _mlp_torch():
    import torch.nn as nn
    a, b, c, d = MLP_SIZES
    net = nn.Sequential(nn.Linear(a, b, device="meta"), nn.Tanh(), nn.Linear(b, c, device="meta"), nn.SiLU(),
                        nn.Linear(c, d, device="meta"))
    return net, nn.MSELoss()


def mlp_torch(p, i):
    net, mse = _mlp_torch()
    return mse(torch_call(net, p, _MLP_TORCH_NAMES, i["x"]), i["y"])


@lru_cache(maxsize=None)
def _mlp_keras(dtype):
    import keras
    a, b, c, d = MLP_SIZES
    layers = [keras_built(keras.layers.Dense(b, activation="tanh", dtype=dtype), (None, a)),
              keras_built(keras.layers.Dense(c, activation="silu", dtype=dtype), (None, b)),
              keras_built(keras.layers.Dense(d, dtype=dtype), (None, c))]
    return layers, keras.losses.MeanSquaredError(dtype=dtype)


def mlp_tensorflow(p, i):
    layers, mse = _mlp_keras(keras_dtype(p["w1"]))
    h = i["x"]
    for k, layer in enumerate(layers, start=1):
        h = keras_call(layer, {"kernel": p[f"w{k}"], "bias": p[f"b{k}"]}, h)
    return mse(i["y"], h)


def mlp_jax(p, i):
    import jax
    import jax.numpy as jnp
    h = jnp.tanh(i["x"] @ p["w1"] + p["b1"])
    h = jax.nn.silu(h @ p["w2"] + p["b2"])
    return jnp.mean((h @ p["w3"] + p["b3"] - i["y"]) ** 2)


# ---- classifier + cross-entropy ------------------------------------------------------------
CLS_FEATURES, CLS_HIDDEN, CLS_CLASSES, CLS_BATCH = 5, 6, 4, 10


def classifier_make(rng):
    params = {}
    params["w1"], params["b1"] = dense_init(rng, CLS_FEATURES, CLS_HIDDEN)
    params["w2"], params["b2"] = dense_init(rng, CLS_HIDDEN, CLS_CLASSES)
    inputs = {"x": rng.standard_normal((CLS_BATCH, CLS_FEATURES)),
              "labels": rng.integers(0, CLS_CLASSES, CLS_BATCH)}
    return params, inputs


_CLS_TORCH_NAMES = {"0.weight": "w1", "0.bias": "b1", "2.weight": "w2", "2.bias": "b2"}


@lru_cache(maxsize=None)
def _classifier_torch():
    import torch.nn as nn
    net = nn.Sequential(nn.Linear(CLS_FEATURES, CLS_HIDDEN, device="meta"), nn.GELU(approximate="none"),
                        nn.Linear(CLS_HIDDEN, CLS_CLASSES, device="meta"))
    return net, nn.CrossEntropyLoss()


def classifier_torch(p, i):
    net, xent = _classifier_torch()
    return xent(torch_call(net, p, _CLS_TORCH_NAMES, i["x"]), i["labels"])


@lru_cache(maxsize=None)
def _classifier_keras(dtype):
    import keras

    def gelu_exact(x):  # keras' gelu default is exact already; stated, as jax's default is not
        return keras.activations.gelu(x, approximate=False)

    hidden = keras_built(keras.layers.Dense(CLS_HIDDEN, activation=gelu_exact, dtype=dtype), (None, CLS_FEATURES))
    out = keras_built(keras.layers.Dense(CLS_CLASSES, dtype=dtype), (None, CLS_HIDDEN))
    return hidden, out, keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)


def classifier_tensorflow(p, i):
    hidden, out, xent = _classifier_keras(keras_dtype(p["w1"]))
    h = keras_call(hidden, {"kernel": p["w1"], "bias": p["b1"]}, i["x"])
    return xent(i["labels"], keras_call(out, {"kernel": p["w2"], "bias": p["b2"]}, h))


def classifier_jax(p, i):
    import jax
    import jax.numpy as jnp
    h = jax.nn.gelu(i["x"] @ p["w1"] + p["b1"], approximate=False)  # jax's default is tanh-approximate
    logp = jax.nn.log_softmax(h @ p["w2"] + p["b2"], axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, i["labels"][:, None], axis=-1))


# ---- embedding + layer norm ---------------------------------------------------------------
VOCAB, DIM, EMB_BATCH, EMB_SEQ = 10, 6, 4, 3
#: made explicit and equal in every framework (torch's default; Keras' is 1e-3)
LN_EPS = 1e-5


def embedding_make(rng):
    params = {"embedding": rng.standard_normal((VOCAB, DIM)),  # torch.nn.Embedding's N(0, 1) init
              "gamma": 1 + 0.1 * rng.standard_normal(DIM), "beta": 0.1 * rng.standard_normal(DIM)}
    inputs = {"ids": rng.integers(0, VOCAB, (EMB_BATCH, EMB_SEQ)),
              "y": rng.standard_normal((EMB_BATCH, EMB_SEQ, DIM))}
    return params, inputs


@lru_cache(maxsize=None)
def _embedding_torch(default_eps):
    import torch.nn as nn
    ln = nn.LayerNorm(DIM, device="meta") if default_eps else nn.LayerNorm(DIM, eps=LN_EPS, device="meta")
    return nn.Embedding(VOCAB, DIM, device="meta"), ln, nn.MSELoss()


def _embedding_torch_loss(default_eps):
    def loss(p, i):
        emb, ln, mse = _embedding_torch(default_eps)
        h = torch_call(emb, p, {"weight": "embedding"}, i["ids"])
        return mse(torch_call(ln, p, {"weight": "gamma", "bias": "beta"}, h), i["y"])
    return loss


@lru_cache(maxsize=None)
def _embedding_keras(dtype, default_eps):
    import keras
    emb = keras_built(keras.layers.Embedding(VOCAB, DIM, dtype=dtype), (None, EMB_SEQ))
    ln = (keras.layers.LayerNormalization(dtype=dtype) if default_eps
          else keras.layers.LayerNormalization(epsilon=LN_EPS, dtype=dtype))
    return emb, keras_built(ln, (None, EMB_SEQ, DIM)), keras.losses.MeanSquaredError(dtype=dtype)


def _embedding_tensorflow_loss(default_eps):
    def loss(p, i):
        emb, ln, mse = _embedding_keras(keras_dtype(p["embedding"]), default_eps)
        h = keras_call(emb, {"embeddings": p["embedding"]}, i["ids"])
        return mse(i["y"], keras_call(ln, {"gamma": p["gamma"], "beta": p["beta"]}, h))
    return loss


def _embedding_jax_loss(default_eps):
    def loss(p, i):
        import jax
        import jax.numpy as jnp
        h = jnp.take(p["embedding"], i["ids"], axis=0)
        normed = jax.nn.standardize(h, axis=-1) if default_eps else jax.nn.standardize(h, axis=-1, epsilon=LN_EPS)
        return jnp.mean((normed * p["gamma"] + p["beta"] - i["y"]) ** 2)
    return loss


CASES = [
    Case(
        name="mlp_native",
        doc="MLP 6-8-8-3 (tanh, silu) + MSE natively: nn.Sequential of Linear, keras Dense, jax.numpy.",
        make=mlp_make,
        native={"torch": mlp_torch, "tensorflow": mlp_tensorflow, "jax": mlp_jax},
        layout={"torch": {"w1": (1, 0), "w2": (1, 0), "w3": (1, 0)}},
        tags=("models", "native"),
    ),
    Case(
        name="classifier_xent",
        doc="Classifier 5-6-4 (exact gelu) + CrossEntropyLoss / SparseCategoricalCrossentropy(from_logits) / "
            "log_softmax + take_along_axis.",
        make=classifier_make,
        native={"torch": classifier_torch, "tensorflow": classifier_tensorflow, "jax": classifier_jax},
        layout={"torch": {"w1": (1, 0), "w2": (1, 0)}},
        tags=("models", "native", "classifier"),
    ),
    Case(
        name="embedding_layernorm",
        doc=f"nn.Embedding + nn.LayerNorm vs keras Embedding + LayerNormalization vs jnp.take + "
            f"jax.nn.standardize, eps={LN_EPS} explicit in all three, + MSE.",
        make=embedding_make,
        native={"torch": _embedding_torch_loss(False), "tensorflow": _embedding_tensorflow_loss(False),
                "jax": _embedding_jax_loss(False)},
        tags=("models", "native", "embedding"),
    ),
    Case(
        name="embedding_layernorm_default_eps",
        doc="embedding_layernorm with each framework's default layer-norm eps (torch 1e-5, keras 1e-3, "
            "jax.nn.standardize 1e-5): tensorflow diverges from the other two.",
        make=embedding_make,
        native={"torch": _embedding_torch_loss(True), "tensorflow": _embedding_tensorflow_loss(True),
                "jax": _embedding_jax_loss(True)},
        tags=("models", "native", "embedding", "default-semantics"),
    ),
]
