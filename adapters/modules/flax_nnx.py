"""Glue for a ``flax.nnx`` module: its Variables by path (``nnx.split``), evaluated by merging
the graph with the given values (a pure function jax can differentiate and jit), layers traced
by wrapping the submodule classes' ``__call__`` for the length of one call."""
from __future__ import annotations

import contextlib

import jax
import numpy as np
from flax import nnx

from adapters.modules.base import EventLog, ModuleGlue, Param, as_float64

_NORMS = ("LayerNorm", "BatchNorm", "RMSNorm", "GroupNorm")
_ROLES = {("Linear", "kernel"): "dense.in_out", ("Conv", "kernel"): "conv.spatial_in_out",
          ("Embed", "embedding"): "embedding"}


def _role(layer_type: str, local: str, variable) -> str:
    if isinstance(variable, nnx.BatchStat):
        return "stat"
    if local == "bias":
        return "bias"
    if local == "scale" and layer_type in _NORMS:
        return "scale"
    return _ROLES.get((layer_type, local), "plain")


def _join(path) -> str:
    return "/".join(str(p) for p in path)


class NnxGlue(ModuleGlue):
    kind = "flax.nnx.Module"

    def __init__(self, adapter, module, call=None, train: bool = False):
        super().__init__(adapter, module, call, train)
        if train:
            module.train()
        else:
            module.eval()
        self._graphdef, state = nnx.split(module)
        self._flat = [(p, v) for p, v in nnx.to_flat_state(state)]
        types = {_join(p): type(n).__name__ for p, n in nnx.iter_graph(module) if isinstance(n, nnx.Module)}
        self._params, self._variables = [], {}
        for path, variable in self._flat:
            value = variable.get_value()
            # floating tensors only: RNG keys (nnx.Rngs state), counters and integer state are not parameters
            if not (hasattr(value, "dtype") and jax.dtypes.issubdtype(value.dtype, np.floating)):
                continue
            name, layer = _join(path), _join(path[:-1])
            layer_type = types.get(layer, "?")
            trainable = isinstance(variable, nnx.Param)
            self._params.append(Param(name, tuple(value.shape), layer, layer_type,
                                      _role(layer_type, str(path[-1]), variable), trainable))
            self._variables[name] = value

    def params(self) -> list:
        return list(self._params)

    def values(self) -> dict:
        return {n: as_float64(np.asarray(v)) for n, v in self._variables.items()}

    def traced(self, values: dict, inputs: dict, taps: dict | None):
        unknown = [n for n in values if n not in self._variables]
        if unknown:
            raise KeyError(f"not variables of the module: {unknown}")
        flat = [(p, v.replace(values[_join(p)]) if _join(p) in values else v) for p, v in self._flat]
        model = nnx.merge(self._graphdef, nnx.from_flat_state(flat))
        log = EventLog(lambda x: isinstance(x, (jax.Array, np.ndarray)), taps)
        layers = {id(n): (_join(p), type(n).__name__, n) for p, n in nnx.iter_graph(model)
                  if isinstance(n, nnx.Module) and p}
        with _traced_calls(layers, log):
            out = self.call_model(model, inputs)
        return out, log.events, log.tensors


@contextlib.contextmanager
def _traced_calls(layers: dict, log: EventLog):
    """Wrap ``__call__`` of every class among ``layers`` (id -> (path, type, module)); restored on exit.
    nnx calls ``type(m).__call__``, so instances cannot be wrapped one by one; a call already
    being recorded for the same module (a subclass calling super().__call__) is not recorded twice."""
    classes = {}
    for cls in {type(row[2]) for row in layers.values()}:
        if callable(getattr(cls, "__call__", None)):
            classes[cls] = (cls.__dict__.get("__call__"), cls.__call__)
    active = set()

    def wrap(original):
        def __call__(self, *args, **kwargs):
            row = layers.get(id(self))
            if row is None or id(self) in active:
                return original(self, *args, **kwargs)
            active.add(id(self))
            try:
                log.enter(row[0], row[1], args)
                return log.leave(row[0], row[1], original(self, *args, **kwargs))
            finally:
                active.discard(id(self))
        return __call__

    try:
        for cls, (_own, original) in classes.items():
            cls.__call__ = wrap(original)
        yield
    finally:
        for cls, (own, _original) in classes.items():
            if own is None:
                del cls.__call__
            else:
                cls.__call__ = own


__all__ = ["NnxGlue"]
