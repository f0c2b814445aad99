"""Glue for a Keras 3 model: its variables by ``Variable.path``, evaluated inside a
``keras.StatelessScope`` that maps every variable to a given value (so the model's own weights
are never used for a check, and the output is a function of the values that the backend's own
autodiff — torch autograd, jax.grad, tf.GradientTape — differentiates), layers traced by
shadowing each layer instance's ``call`` for the length of one call.

Keras fixes its backend when it is first imported (KERAS_BACKEND): a Keras model runs in the
worker whose framework is that backend, and the glue refuses any other.

Keras layers cast their inputs and create their variables in their dtype policy (float32 by
default), so a float64 check needs a model built under a float64 policy: the harness builds one
model per dtype with ``build_in(dtype, builder)``.
"""
from __future__ import annotations

import keras

from adapters.errors import Unsupported
from adapters.modules.base import EventLog, ModuleGlue, Param, as_float64

_CONVS = ("Conv1D", "Conv2D", "Conv3D")
# (kh, kw, in, multiplier): a grouped conv's (kh, kw, 1, in*multiplier) reshaped. The conv
# layout rules permute axes only, so they fit it exactly when in == 1 and fail on the shape
# otherwise (never a silent mismatch).
_DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
_NORMS = ("LayerNormalization", "BatchNormalization", "GroupNormalization", "RMSNormalization")
# Keras's gate order along the last axis of kernel, recurrent_kernel and bias
_GATES = {"LSTMCell": "ifco", "LSTM": "ifco", "GRUCell": "zrh", "GRU": "zrh", "SimpleRNNCell": "h",
          "SimpleRNN": "h"}


def build_in(dtype: str, builder, seed: int | None = None):
    """``builder()`` (a function returning a model) run under a ``dtype`` floatx and dtype
    policy, both restored afterwards: Keras casts inputs and creates variables in the policy it
    was built under, so the harness builds one model per dtype it checks. ``seed``: Keras's
    global seed first (``keras.utils.set_random_seed``: Python's, numpy's and the backend's
    generators), so the model's initial weights are the same in every process that builds it."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    try:
        keras.config.set_floatx(dtype)
        keras.config.set_dtype_policy(dtype)
        if seed is not None:
            keras.utils.set_random_seed(seed)
        return builder()
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


def _role(layer_type: str, local: str) -> tuple:
    """(role, gates) of a variable called ``local`` in a layer of class ``layer_type``."""
    if layer_type in _GATES:
        gates = _GATES[layer_type]
        roles = {"kernel": "rnn.input.in_out", "recurrent_kernel": "rnn.recurrent.in_out", "bias": "rnn.bias"}
        return (roles[local], gates) if local in roles else ("plain", "")
    if local == "bias":
        return "bias", ""
    if local in ("moving_mean", "moving_variance"):
        return "stat", ""
    if layer_type in _NORMS:
        return {"gamma": ("scale", ""), "scale": ("scale", ""), "beta": ("bias", "")}.get(local, ("plain", ""))
    if local == "kernel":
        if layer_type == "Dense":
            return "dense.in_out", ""
        if layer_type in _CONVS or layer_type in _DEPTHWISE:
            return "conv.spatial_in_out", ""
    if local == "embeddings" and layer_type == "Embedding":
        return "embedding", ""
    return "plain", ""


def _children(layer) -> list:
    """A layer's direct sublayers, in the order it tracks them. Keras 3 has no public API for
    this (``Model.layers`` exists on models only, and flattens nothing below them): this is the
    one private Keras API the glue uses."""
    return layer._flatten_layers(include_self=False, recursive=False)


def _walk(model) -> list:
    """(path, layer, traced) of every layer below ``model``, depth first in tracking order,
    each layer once (a shared layer under its first path). ``traced`` is False for an
    InputLayer (never called) and inside a recurrent layer, whose cell runs once per time
    step inside the backend's loop (lax.scan, tf.while_loop): those tensors cannot leave it."""
    rows, seen = [], {id(model)}

    def visit(layer, prefix, traced):
        for child in _children(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{prefix}{child.name}"
            rows.append((path, child, traced and not isinstance(child, keras.layers.InputLayer)))
            visit(child, f"{path}/", traced and not isinstance(child, keras.layers.RNN))

    visit(model, "", True)
    return rows


class KerasGlue(ModuleGlue):
    """``train`` is honoured when ``call`` is None (the model is called with
    ``training=self.train``); a custom ``call`` passes ``training`` itself."""

    kind = "keras.Model"

    def __init__(self, adapter, module, call=None, train: bool = False):
        super().__init__(adapter, module, call, train)
        backend = keras.backend.backend()
        if backend != adapter.name:
            raise Unsupported(f"Keras here runs on its {backend} backend, not {adapter.name}: a Keras model on the "
                              f"{adapter.name} backend runs in a {adapter.name} worker (harness run)")
        self._params, self._variables, self._layers, self._ready = [], {}, [], False
        if module.built:
            self._bound()

    def prepare(self, inputs: dict) -> None:
        """A model without an Input (a subclassed model, a Sequential given none) makes its
        variables in its first call: that call builds it, in a StatelessScope so that nothing
        it would update (batch statistics, seed states) changes the values it starts from."""
        if not self.module.built:
            with keras.StatelessScope():
                self.call_model(self.module, inputs)
        self._bound()

    def _bound(self) -> "KerasGlue":
        if not self._ready:
            if not self.module.built:
                raise ValueError(f"{type(self.module).__name__} {self.module.name!r} is not built yet: call "
                                 "glue.prepare(inputs) first (its first call makes its variables)")
            self._bind()
            self._ready = True
        return self

    def _bind(self) -> None:
        module = self.module
        self._layers = _walk(module)
        # the deepest layer holding a variable owns it (walked after its parents, fewest weights);
        # Param.layer is its path in the layer tree, as events name it: a Sequential given an
        # Input prefixes its variables' paths with its own name ('sequential/dense/kernel')
        owner = {}
        for path, layer, _traced in [("", module, False)] + self._layers:
            count = len(layer.weights)
            for v in layer.weights:
                if id(v) not in owner or count <= len(owner[id(v)][1].weights):
                    owner[id(v)] = (path, layer)
        variables = [(v, True) for v in module.trainable_variables] + \
                    [(v, False) for v in module.non_trainable_variables if keras.backend.is_float_dtype(v.dtype)]
        for v, trainable in variables:
            if v.path in self._variables:
                raise ValueError(f"two variables of {module.name!r} share the path {v.path!r}: give their layers "
                                 "distinct names")
            layer, layer_obj = owner.get(id(v), ("", module))
            layer_type = type(layer_obj).__name__
            role, gates = _role(layer_type, v.path.rpartition("/")[2])
            self._params.append(Param(v.path, tuple(v.shape), layer, layer_type, role, trainable, gates))
            self._variables[v.path] = v

    def params(self) -> list:
        return list(self._bound()._params)

    def values(self) -> dict:
        return {n: as_float64(keras.ops.convert_to_numpy(v.value)) for n, v in self._bound()._variables.items()}

    def traced(self, values: dict, inputs: dict, taps: dict | None):
        mapping = [(self._variables[n], v) for n, v in self._bound()._known(values).items()]
        log = EventLog(keras.ops.is_tensor, taps)
        shadowed = []
        try:
            for path, layer, traced in self._layers:
                if traced:
                    shadowed.append((layer, vars(layer).get("call")))
                    vars(layer)["call"] = _recording(log, path, type(layer).__name__, layer.call)
            with keras.StatelessScope(state_mapping=mapping):
                out = self.call_model(self.module, inputs)
        finally:
            for layer, before in reversed(shadowed):
                if before is None:
                    vars(layer).pop("call", None)
                else:
                    vars(layer)["call"] = before
        return out, log.events, log.tensors

    def call_model(self, model, inputs: dict):
        if self.call is not None:
            return self.call(model, inputs)
        return model(*inputs.values(), training=self.train)

    def _known(self, values: dict) -> dict:
        """Every given name must be one of the model's: a typo is an error, never the model's
        own value used in silence (StatelessScope leaves unmapped variables at their own)."""
        unknown = [n for n in values if n not in self._variables]
        if unknown:
            raise KeyError(f"not variables of the model: {unknown}")
        return values


def _recording(log, path, layer_type, call):
    """``call`` (a layer's bound method) recording its input and output, with any tap added."""
    def recorded(*args, **kwargs):
        log.enter(path, layer_type, args)
        return log.leave(path, layer_type, call(*args, **kwargs))
    return recorded


__all__ = ["KerasGlue", "build_in"]
