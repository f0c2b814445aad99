"""A small CNN natively in each framework: Conv2d -> BatchNorm (training mode: batch statistics)
-> ReLU -> MaxPool 2x2 -> AvgPool 2x2 -> Linear, with cross-entropy.

Canonical layout is torch's: images NCHW, conv kernel OIHW; the dense head's kernel is (in, out)
over the NCHW flattening (c, h, w). Keras Conv2D wants HWIO kernels and NHWC images: the kernel
permutation is declared (``layout={"tensorflow": {"conv_w": (2, 3, 1, 0)}}``, so the harness
transposes it and its gradient) and the TF function transposes the images itself, and back to
NCHW before flattening so the head sees features in the canonical order. JAX uses
lax.conv_general_dilated with explicit dimension numbers and lax.reduce_window for pooling.
BatchNorm eps is explicit and equal (torch's 1e-5; Keras' default is 1e-3); torch's BatchNorm2d
has track_running_stats=False, so it holds no buffers and always normalises by batch statistics.
"""
from functools import lru_cache

import numpy as np

from harness import Case

from cases.models_common import dense_init, keras_built, keras_call, keras_dtype, nchw_to_nhwc, nhwc_to_nchw, torch_call

BATCH, C_IN, SIZE, C_OUT, KERNEL, CLASSES = 3, 2, 8, 3, 3, 4
BN_EPS = 1e-5
FEATURES = C_OUT * (SIZE // 4) ** 2  # after two 2x2 poolings


def make(rng):
    bound = 1 / np.sqrt(C_IN * KERNEL * KERNEL)
    params = {"conv_w": rng.uniform(-bound, bound, (C_OUT, C_IN, KERNEL, KERNEL)),
              "conv_b": rng.uniform(-bound, bound, (C_OUT,)),
              "bn_gamma": 1 + 0.1 * rng.standard_normal(C_OUT),
              "bn_beta": 0.1 * rng.standard_normal(C_OUT)}
    params["fc_w"], params["fc_b"] = dense_init(rng, FEATURES, CLASSES)
    inputs = {"x": rng.standard_normal((BATCH, C_IN, SIZE, SIZE)),
              "labels": rng.integers(0, CLASSES, BATCH)}
    return params, inputs


_TORCH_NAMES = {"conv.weight": "conv_w", "conv.bias": "conv_b", "bn.weight": "bn_gamma", "bn.bias": "bn_beta",
                "fc.weight": "fc_w", "fc.bias": "fc_b"}


@lru_cache(maxsize=None)
def _torch_model():
    import torch.nn as nn

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(C_IN, C_OUT, KERNEL, padding=KERNEL // 2, device="meta")
            self.bn = nn.BatchNorm2d(C_OUT, eps=BN_EPS, track_running_stats=False, device="meta")
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(2)
            self.avgpool = nn.AvgPool2d(2)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(FEATURES, CLASSES, device="meta")

        def forward(self, x):
            h = self.avgpool(self.maxpool(self.relu(self.bn(self.conv(x)))))
            return self.fc(self.flatten(h))

    return SmallCNN(), nn.CrossEntropyLoss()  # a fresh module is in training mode


def torch_loss(p, i):
    model, xent = _torch_model()
    return xent(torch_call(model, p, _TORCH_NAMES, i["x"]), i["labels"])


@lru_cache(maxsize=None)
def _keras_model(dtype):
    import keras
    L = keras.layers
    conv = keras_built(L.Conv2D(C_OUT, KERNEL, padding="same", dtype=dtype), (None, SIZE, SIZE, C_IN))
    bn = keras_built(L.BatchNormalization(axis=-1, epsilon=BN_EPS, dtype=dtype), (None, SIZE, SIZE, C_OUT))
    fc = keras_built(L.Dense(CLASSES, dtype=dtype), (None, FEATURES))
    rest = (L.ReLU(dtype=dtype), L.MaxPooling2D(2, dtype=dtype), L.AveragePooling2D(2, dtype=dtype))
    return conv, bn, rest, L.Flatten(dtype=dtype), fc, \
        keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)


def tensorflow_loss(p, i):
    conv, bn, (relu, maxpool, avgpool), flatten, fc, xent = _keras_model(keras_dtype(p["conv_w"]))
    h = keras_call(conv, {"kernel": p["conv_w"], "bias": p["conv_b"]}, nchw_to_nhwc(i["x"]))
    h = keras_call(bn, {"gamma": p["bn_gamma"], "beta": p["bn_beta"]}, h, training=True)
    h = avgpool(maxpool(relu(h)))
    logits = keras_call(fc, {"kernel": p["fc_w"], "bias": p["fc_b"]}, flatten(nhwc_to_nchw(h)))
    return xent(i["labels"], logits)


def jax_loss(p, i):
    import jax
    import jax.numpy as jnp
    from jax import lax
    pad = KERNEL // 2
    h = lax.conv_general_dilated(i["x"], p["conv_w"], window_strides=(1, 1), padding=((pad, pad), (pad, pad)),
                                 dimension_numbers=("NCHW", "OIHW", "NCHW"))
    h = h + p["conv_b"][None, :, None, None]
    mean = jnp.mean(h, axis=(0, 2, 3), keepdims=True)
    var = jnp.mean((h - mean) ** 2, axis=(0, 2, 3), keepdims=True)  # biased, as BatchNorm normalises
    h = (h - mean) / jnp.sqrt(var + BN_EPS) * p["bn_gamma"][None, :, None, None] + p["bn_beta"][None, :, None, None]
    h = jax.nn.relu(h)
    window = (1, 1, 2, 2)
    h = lax.reduce_window(h, -jnp.inf, lax.max, window, window, "VALID")
    h = lax.reduce_window(h, 0.0, lax.add, window, window, "VALID") / 4.0
    logits = h.reshape(h.shape[0], -1) @ p["fc_w"] + p["fc_b"]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, i["labels"][:, None], axis=-1))


CASES = [
    Case(
        name="cnn_bn_pool",
        doc="Conv2d -> BatchNorm2d (batch stats) -> ReLU -> MaxPool -> AvgPool -> Linear + cross-entropy, "
            "natively (torch.nn, keras NHWC with HWIO kernel, jax.lax).",
        make=make,
        native={"torch": torch_loss, "tensorflow": tensorflow_loss, "jax": jax_loss},
        layout={"torch": {"fc_w": (1, 0)}, "tensorflow": {"conv_w": (2, 3, 1, 0)}},
        tags=("models", "native", "cnn", "gpu"),
    ),
]
