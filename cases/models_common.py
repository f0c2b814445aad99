"""Helpers shared by the native model cases (cases/models_*.py). Defines no cases.

Canonical layout across the model cases: every dense kernel is (in, out) -- including torch's
packed attention projection (canonical (E, 3E), columns q | k | v) and the recurrent kernels
(canonical (in, 4H) / (H, 4H), columns in torch's gate order). torch stores all of these as
(out, in), so each case declares ``layout={"torch": {name: (1, 0)}}`` and the harness transposes
on the way in and back on the gradient. Conv kernels are OIHW (torch's own), images NCHW.

Frameworks are imported only inside functions: listing and planning import none.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def uniform(rng, bound, shape):
    """torch's default init range for Linear/LSTM/GRU (U(-1/sqrt(fan), 1/sqrt(fan)))."""
    return rng.uniform(-bound, bound, shape)


def dense_init(rng, fan_in, fan_out):
    bound = 1 / np.sqrt(fan_in)
    return uniform(rng, bound, (fan_in, fan_out)), uniform(rng, bound, (fan_out,))


# ---- torch -------------------------------------------------------------------------------
def torch_call(module, params: dict, names: dict, *args, **kwargs):
    """functional_call with the harness's tensors as the module's parameters.

    ``names`` maps the module's parameter names to the case's param names; a module that holds
    a parameter the mapping does not name fails loudly (functional_call with strict=True)."""
    import torch
    return torch.func.functional_call(module, {m: params[c] for m, c in names.items()}, args, kwargs,
                                      strict=True)


# ---- keras (TensorFlow backend) ----------------------------------------------------------
def keras_dtype(tensor) -> str:
    """The Keras dtype for a TF tensor: layers are built per dtype so they compute in it."""
    return tensor.dtype.name


def keras_call(layer, tensors: dict, *args, **kwargs):
    """layer.stateless_call with the harness's tensors as the layer's trainable variables.

    ``tensors`` maps a suffix of each trainable variable's path (``"kernel"``, ``"query/kernel"``)
    to the tensor that plays it; every trainable variable must be named exactly once and shapes
    must agree, so a translation that produces the wrong shape fails here, not silently. The
    non-trainable variables (moving statistics, seed state) pass their current values.
    Returns the layer's output (the updated non-trainable values are dropped)."""
    trainable = []
    used = set()
    for v in layer.trainable_variables:
        matches = [k for k in tensors if v.path == k or v.path.endswith("/" + k)]
        if len(matches) != 1:
            raise KeyError(f"{layer.name}: variable {v.path} matched {matches or 'no key'} of {sorted(tensors)}")
        t = tensors[matches[0]]
        if tuple(t.shape) != tuple(v.shape):
            raise ValueError(f"{layer.name}: {v.path} wants shape {tuple(v.shape)}, got {tuple(t.shape)}")
        trainable.append(t)
        used.add(matches[0])
    unused = set(tensors) - used
    if unused:
        raise KeyError(f"{layer.name}: no trainable variable for {sorted(unused)}")
    out, _ = layer.stateless_call(trainable, _non_trainable(layer), *args, **kwargs)
    return out


@lru_cache(maxsize=None)
def _non_trainable_cached(layer):
    import tensorflow as tf
    return tuple(tf.constant(np.asarray(v.numpy())) for v in layer.non_trainable_variables)


def _non_trainable(layer):
    return list(_non_trainable_cached(layer))


def keras_built(layer, *shapes):
    """Build ``layer`` for the given input shape(s) and return it."""
    layer.build(*shapes)
    return layer


def nchw_to_nhwc(x):
    import tensorflow as tf
    return tf.transpose(x, (0, 2, 3, 1))


def nhwc_to_nchw(x):
    import tensorflow as tf
    return tf.transpose(x, (0, 3, 1, 2))
