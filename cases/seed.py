"""The seed case: nn.Linear(10, 1) + MSELoss, written natively in each framework.

Canonical layout: the dense kernel is (in, out). torch.nn.Linear stores its weight as
(out, in), so the case declares that permutation and the harness transposes on the way in
and back on the gradient; Keras' Dense kernel is (in, out) already; JAX is plain jax.numpy.
"""
from functools import lru_cache

import numpy as np

from harness import Case

IN_FEATURES, OUT_FEATURES, BATCH = 10, 1, 16


def make(rng):
    bound = 1 / np.sqrt(IN_FEATURES)  # torch.nn.Linear's default init range
    params = {"weight": rng.uniform(-bound, bound, (IN_FEATURES, OUT_FEATURES)),
              "bias": rng.uniform(-bound, bound, (OUT_FEATURES,))}
    inputs = {"x": rng.standard_normal((BATCH, IN_FEATURES)),
              "y": rng.standard_normal((BATCH, OUT_FEATURES))}
    return params, inputs


@lru_cache(maxsize=None)
def _torch_modules():
    import torch
    # parameters are supplied per call through functional_call; the module holds none of its own
    return torch.nn.Linear(IN_FEATURES, OUT_FEATURES, device="meta"), torch.nn.MSELoss()


def torch_loss(params, inputs):
    import torch
    linear, mse = _torch_modules()
    pred = torch.func.functional_call(linear, {"weight": params["weight"], "bias": params["bias"]},
                                      (inputs["x"],))
    return mse(pred, inputs["y"])


@lru_cache(maxsize=None)
def _keras_modules(dtype):
    import keras
    dense = keras.layers.Dense(OUT_FEATURES, dtype=dtype)
    dense.build((None, IN_FEATURES))
    # a Keras loss computes in floatx (float32) unless told otherwise
    return dense, keras.losses.MeanSquaredError(dtype=dtype)


def tensorflow_loss(params, inputs):
    dense, mse = _keras_modules(params["weight"].dtype.name)
    # stateless_call takes the kernel and bias as tensors, so the tape sees them as inputs
    pred, _ = dense.stateless_call([params["weight"], params["bias"]], [], inputs["x"])
    return mse(inputs["y"], pred)


def jax_loss(params, inputs):
    import jax.numpy as jnp
    pred = inputs["x"] @ params["weight"] + params["bias"]
    return jnp.mean((pred - inputs["y"]) ** 2)


CASES = [
    Case(
        name="linear_mse",
        doc="The seed: nn.Linear(10, 1) + MSELoss natively (torch.nn, keras Dense, jax.numpy).",
        make=make,
        native={"torch": torch_loss, "tensorflow": tensorflow_loss, "jax": jax_loss},
        layout={"torch": {"weight": (1, 0)}},
        tags=("seed", "models", "native", "twice-differentiable", "default", "quick", "gpu"),
    ),
]
