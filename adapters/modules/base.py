"""What every module glue gives the harness: a module's parameters as a flat, named, ordered
list with their layout conventions, a pure function of those parameters, and a traced call
that reports each layer's input and output in the order they happen.

A glue never keeps the module's own weights for a check: every value the loss sees is passed
in (``apply(values, inputs)``), so gradients are taken of a function of named tensors exactly
as for a hand-written case, and the same values reach every framework. The structure is numpy
and plain Python (``Param``, ``Event``), so the mapping between a module and its port
(harness/define/port_mapping.py) never imports a framework.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: layout conventions a parameter can carry (``Param.role``); the mapping rules translate
#: between them. ``dense.out_in``: torch/equinox Linear weight (out, in); ``dense.in_out``:
#: Flax/Keras Dense kernel (in, out); ``conv.out_in``: OI + spatial (torch, equinox);
#: ``conv.spatial_in_out``: spatial + IO (Flax, Keras); ``rnn.*``: recurrent weights with their
#: framework's gate order (``Param.gates``); ``plain``: a parameter of no known layer.
ROLES = ("dense.out_in", "dense.in_out", "conv.out_in", "conv.spatial_in_out", "embedding", "scale", "bias",
         "rnn.input.out_in", "rnn.input.in_out", "rnn.recurrent.out_in", "rnn.recurrent.in_out", "rnn.bias",
         "stat", "plain")


@dataclass(frozen=True)
class Param:
    """One parameter or state tensor of a module, as its framework names it."""
    path: str               # the framework's own name: 'h.0.attn.c_attn.weight', 'h/0/attn/c_attn/kernel'
    shape: tuple
    layer: str              # the layer that owns it: 'h.0.attn.c_attn'
    layer_type: str         # that layer's class: 'Linear', 'Dense', 'Conv2d', 'LSTM'
    role: str               # its layout convention, one of ROLES
    trainable: bool = True  # False: a buffer, batch-norm statistic or non-trainable variable
    gates: str = ""         # recurrent weights: the gate order along the gate axis ('ifgo', 'rzn', 'zrh')

    def to_json(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_json(cls, row: dict) -> "Param":
        return cls(**{**row, "shape": tuple(row["shape"])})


@dataclass(frozen=True)
class Event:
    """A layer's input ('in', before it runs) or output ('out', after) during one call."""
    layer: str
    layer_type: str
    at: str                 # 'in' | 'out'
    index: int              # position in time order


class ModuleGlue:
    """Base of every glue; one instance binds one built module to one adapter.

    ``call(model, inputs)`` says how the model is called on the case's inputs (a dict of native
    tensors); None calls it with the inputs positionally, in make's order.
    """

    kind = "?"

    def __init__(self, adapter, module, call=None, train: bool = False):
        self.adapter, self.module, self.call, self.train = adapter, module, call, train

    # ---- structure --------------------------------------------------------------------
    def prepare(self, inputs: dict) -> None:
        """Called once with the case's inputs (native tensors) before anything else: a module
        whose variables exist only after a first call (flax.linen's init) makes them here."""

    def params(self) -> list:
        """Every Param of the module, trainable and state, in the module's own listing order."""
        raise NotImplementedError

    def values(self) -> dict:
        """path -> float64 numpy value of every Param (what the module holds now)."""
        raise NotImplementedError

    # ---- evaluation -------------------------------------------------------------------
    def apply(self, values: dict, inputs: dict):
        """The model's output with every parameter and state tensor taken from ``values``
        (path -> native tensor): a pure function of them, differentiable by the adapter."""
        return self.traced(values, inputs, None)[0]

    def traced(self, values: dict, inputs: dict, taps: dict | None):
        """(output, events, tensors): the call of ``apply``, recording each layer's input
        before it runs and output after (``events``, time order; ``tensors`` the matching
        arrays, the first floating array of the layer's argument or result). With ``taps``
        (layer path -> tensor of that layer's output shape), each layer's output has its tap
        added: the gradient of the loss with respect to a zero tap is the gradient with
        respect to that layer's output."""
        raise NotImplementedError

    # ---- helpers ------------------------------------------------------------------------
    def check_tensors(self, out, events: list, tensors: list) -> None:
        """Raise Unsupported where the layer tensors of an untransformed ``traced`` call cannot be
        used outside it (a layer run inside a transformation of ``call``); the events still can."""

    def call_model(self, model, inputs: dict):
        return self.call(model, inputs) if self.call is not None else model(*inputs.values())


class EventLog:
    """Collects events and their tensors during one traced call, and adds taps to outputs.

    ``first_array`` picks the tensor a layer is compared on from whatever it takes or returns
    (a tuple from an LSTM, a dict from a Keras layer): the first floating array found."""

    def __init__(self, is_array, taps: dict | None):
        self.is_array, self.taps = is_array, taps
        self.events, self.tensors = [], []

    def first_array(self, value):
        if self.is_array(value):
            return value
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, (list, tuple)):
            for item in value:
                found = self.first_array(item)
                if found is not None:
                    return found
        return None

    def enter(self, layer: str, layer_type: str, args) -> None:
        x = self.first_array(args)
        if x is not None:
            self.events.append(Event(layer, layer_type, "in", len(self.events)))
            self.tensors.append(x)

    def leave(self, layer: str, layer_type: str, out):
        """Record the output; return it with the tap added (to its first array) when tapped."""
        x = self.first_array(out)
        if x is None:
            return out
        if self.taps is not None and layer in self.taps:
            tapped = x + self.taps[layer]
            out = _replace_first(out, x, tapped, self.is_array)
            x = tapped
        self.events.append(Event(layer, layer_type, "out", len(self.events)))
        self.tensors.append(x)
        return out


def _replace_first(value, old, new, is_array):
    if value is old:
        return new
    if isinstance(value, tuple):
        return type(value)(_replace_first(v, old, new, is_array) for v in value) if not hasattr(value, "_fields") \
            else type(value)(*(_replace_first(v, old, new, is_array) for v in value))
    if isinstance(value, list):
        return [_replace_first(v, old, new, is_array) for v in value]
    if isinstance(value, dict):
        return {k: _replace_first(v, old, new, is_array) for k, v in value.items()}
    return value


def out_in_role(layer_type: str, local: str, convs: tuple, norms: tuple) -> str:
    """The role of ``local`` ('weight', 'bias', ...) in a layer that keeps torch's layouts
    (torch.nn, Equinox): Linear (out, in), conv OI + spatial, an embedding table, a norm's scale."""
    if local == "bias":
        return "bias"
    if local == "weight":
        if layer_type == "Linear":
            return "dense.out_in"
        if layer_type in convs:
            return "conv.out_in"
        if layer_type == "Embedding":
            return "embedding"
        if layer_type in norms:
            return "scale"
    return "plain"


def as_float64(array) -> np.ndarray:
    a = np.asarray(array)
    return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a


__all__ = ["Event", "EventLog", "ModuleGlue", "Param", "ROLES", "as_float64", "out_in_role"]
