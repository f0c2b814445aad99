"""Glue for a ``torch.nn.Module``: its parameters and persistent buffers by name, evaluated
with ``torch.func.functional_call`` (so every value is passed in and the module's own weights
are never used for a check), layers traced with forward pre-hooks and hooks."""
from __future__ import annotations

import torch

from adapters.modules.base import EventLog, ModuleGlue, Param, as_float64, out_in_role

_NORMS = ("LayerNorm", "GroupNorm", "RMSNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d",
          "InstanceNorm2d", "InstanceNorm3d", "LocalResponseNorm")
_CONVS = ("Conv1d", "Conv2d", "Conv3d")
_GATES = {"LSTM": "ifgo", "GRU": "rzn", "RNN": "h", "LSTMCell": "ifgo", "GRUCell": "rzn", "RNNCell": "h"}


def _role(layer_type: str, local: str) -> tuple:
    """(role, gates) of a parameter called ``local`` in a layer of class ``layer_type``."""
    if layer_type in _GATES:
        gates = _GATES[layer_type]
        if local.startswith("weight_ih"):
            return "rnn.input.out_in", gates
        if local.startswith("weight_hh"):
            return "rnn.recurrent.out_in", gates
        if local.startswith("bias_"):
            return "rnn.bias", gates
        return "plain", ""
    if local in ("running_mean", "running_var"):
        return "stat", ""
    return out_in_role(layer_type, local, _CONVS, _NORMS), ""


class TorchModuleGlue(ModuleGlue):
    kind = "torch.nn.Module"

    def __init__(self, adapter, module, call=None, train: bool = False):
        super().__init__(adapter, module, call, train)
        module.train(train)
        self._layers = {name: m for name, m in module.named_modules() if name}
        persistent = set(module.state_dict().keys())
        self._params = []
        self._tensors = {}
        for name, p in module.named_parameters():
            self._add(name, p, p.requires_grad)
        for name, b in module.named_buffers():
            if name in persistent and torch.is_floating_point(b):
                self._add(name, b, False)
        self._wrapper = _Calls(self)

    def _add(self, name, tensor, trainable):
        layer, _, local = name.rpartition(".")
        owner = self._layers.get(layer, self.module)
        layer_type = type(owner).__name__
        role, gates = _role(layer_type, local)
        self._params.append(Param(name, tuple(tensor.shape), layer, layer_type, role, bool(trainable), gates))
        self._tensors[name] = tensor

    def params(self) -> list:
        return list(self._params)

    def values(self) -> dict:
        return {n: as_float64(t.detach().cpu().double().numpy()) for n, t in self._tensors.items()}

    def traced(self, values: dict, inputs: dict, taps: dict | None):
        log = EventLog(torch.is_tensor, taps)
        handles = []
        for name, layer in self._layers.items():
            kind = type(layer).__name__
            handles.append(layer.register_forward_pre_hook(
                lambda _m, args, name=name, kind=kind: log.enter(name, kind, args)))
            handles.append(layer.register_forward_hook(
                lambda _m, _args, out, name=name, kind=kind: log.leave(name, kind, out)))
        try:
            out = torch.func.functional_call(self._wrapper, {f"model.{n}": v for n, v in self._known(values).items()},
                                             (inputs,), strict=False, tie_weights=True)
        finally:
            for h in handles:
                h.remove()
        return out, log.events, log.tensors

    def _known(self, values: dict) -> dict:
        """Every declared name must be one of the module's: a typo is an error, never the
        module's own value used in silence (functional_call(strict=False) would)."""
        unknown = [n for n in values if n not in self._tensors]
        if unknown:
            raise KeyError(f"not tensors of the module: {unknown}")
        return values


class _Calls(torch.nn.Module):
    """The module as ``call(model, inputs)`` calls it, so functional_call can replace its tensors."""

    def __init__(self, glue):
        super().__init__()
        self.model = glue.module
        self._glue = glue

    def forward(self, inputs):
        return self._glue.call_model(self.model, inputs)


__all__ = ["TorchModuleGlue"]
