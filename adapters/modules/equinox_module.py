"""Glue for an ``equinox.Module``: its floating arrays (``eqx.is_inexact_array``) by
'/'-joined pytree path, evaluated on a copy of the module whose arrays are the values passed
in (``eqx.partition``/``eqx.combine``), layers traced by wrapping ``__call__`` on their classes
for the length of one call (instances are frozen, so a hook cannot be set on them).

Every floating array is a trainable parameter: Equinox has no buffers. Stateful models
(``eqx.nn.State``, ``BatchNorm``) are refused: their call takes and returns the state, which
``call(model, inputs)`` cannot carry.

Dtypes follow the values and the inputs together: Linear, Conv and Embedding compute in the
dtype their arrays promote to, but LayerNorm, GroupNorm and RMSNorm compute in the input's
dtype (float32 at least) and cast their weights to it, so float64 values only give a float64
computation with float64 inputs. The glue casts nothing.

Layers are compared where the model is called on the whole batch, as its torch original is.
A layer called inside a ``jax.vmap`` (or ``jax.checkpoint``, ``lax.scan``) of ``call`` holds that
transform's tracers, which mean nothing once the call returns: the glue refuses to trace it
(Unsupported, in words), and the gradients are compared all the same. The wrapping is
process-wide for the length of a call: two threads must not trace at once.
"""
from __future__ import annotations

import equinox as eqx
import jax

from adapters.errors import Unsupported
from adapters.modules.base import EventLog, ModuleGlue, Param, as_float64, out_in_role

_CONVS = ("Conv", "Conv1d", "Conv2d", "Conv3d")   # ConvTranspose's (out, in) is not torch's: left plain
_NORMS = ("LayerNorm", "GroupNorm", "RMSNorm")
_GATES = {"LSTMCell": "ifgo", "GRUCell": "rzn"}


def _role(layer_type: str, local: str) -> tuple:
    """(role, gates) of an array called ``local`` in a layer of class ``layer_type``."""
    if layer_type in _GATES:
        gates = _GATES[layer_type]
        roles = {"weight_ih": "rnn.input.out_in", "weight_hh": "rnn.recurrent.out_in", "bias": "rnn.bias"}
        return (roles[local], gates) if local in roles else ("plain", "")   # GRUCell's bias_n: no shared layout
    return out_in_role(layer_type, local, _CONVS, _NORMS), ""


def _key(entry) -> str:
    """One step of a pytree path as a name: an attribute, a sequence index or a dict key."""
    for field in ("name", "idx", "key"):
        if hasattr(entry, field):
            return str(getattr(entry, field))
    return str(entry)


def _submodules(module) -> list:
    """(path tuple, module) of every eqx.Module inside ``module`` (itself first), in pytree order."""
    found = [((), module)]
    def inside(x):
        return x is not module and isinstance(x, eqx.Module)

    inner = jax.tree_util.tree_flatten_with_path(module, is_leaf=inside)
    for keys, leaf in inner[0]:
        if isinstance(leaf, eqx.Module):
            prefix = tuple(_key(k) for k in keys)
            found += [(prefix + path, sub) for path, sub in _submodules(leaf)]
    return found


def _stateful(module) -> bool:
    leaves = jax.tree_util.tree_leaves(module, is_leaf=lambda x: isinstance(x, (eqx.nn.StateIndex, eqx.nn.BatchNorm)))
    return any(isinstance(x, (eqx.nn.StateIndex, eqx.nn.BatchNorm)) for x in leaves)


class EquinoxGlue(ModuleGlue):
    kind = "equinox.Module"

    def __init__(self, adapter, module, call=None, train: bool = False):
        super().__init__(adapter, module, call, train)
        if _stateful(module):
            raise Unsupported(f"{type(module).__name__} holds eqx.nn.State (a StateIndex or BatchNorm): its call "
                              "takes and returns the state, which the module glue does not carry")
        layers = {path: type(sub).__name__ for path, sub in _submodules(module)}
        self._arrays, self._static = eqx.partition(module, eqx.is_inexact_array)
        self._params, self._leaf = [], {}   # Param path -> index among the flattened array leaves
        for i, (keys, leaf) in enumerate(jax.tree_util.tree_flatten_with_path(self._arrays)[0]):
            parts = tuple(_key(k) for k in keys)
            owner = max((p for p in layers if parts[:len(p)] == p), key=len)
            role, gates = _role(layers[owner], parts[-1])
            path = "/".join(parts)
            self._params.append(Param(path, tuple(leaf.shape), "/".join(owner), layers[owner], role, True, gates))
            self._leaf[path] = i

    def prepare(self, inputs: dict) -> None:
        """Nothing to do: an Equinox module holds its arrays from construction."""

    # ---- structure --------------------------------------------------------------------
    def params(self) -> list:
        return list(self._params)

    def values(self) -> dict:
        leaves = jax.tree_util.tree_leaves(self._arrays)
        return {p: as_float64(leaves[i]) for p, i in self._leaf.items()}

    # ---- evaluation -------------------------------------------------------------------
    def check_tensors(self, out, events: list, tensors: list) -> None:
        _no_escaped_tracers(out, events, tensors)

    def traced(self, values: dict, inputs: dict, taps: dict | None):
        unknown = [n for n in values if n not in self._leaf]
        if unknown:
            raise KeyError(f"not arrays of the module: {unknown}")
        leaves, treedef = jax.tree_util.tree_flatten(self._arrays)
        for path, i in self._leaf.items():
            if path in values:
                leaves[i] = values[path]
        model = eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), self._static)
        log = EventLog(lambda x: isinstance(x, jax.Array), taps)
        subs = [(path, sub) for path, sub in _submodules(model) if path]   # held: their ids stay theirs
        layers = {id(sub): ("/".join(path), type(sub).__name__) for path, sub in subs}
        with _Calls(layers, [type(sub) for _, sub in subs], log):
            out = self.call_model(model, inputs)
        return out, log.events, log.tensors


def _no_escaped_tracers(out, events: list, tensors: list) -> None:
    """A concrete output with a layer tensor that is still a tracer: the layer ran inside a
    transformation of ``call`` (``jax.vmap`` over the batch, as Equinox models usually are), whose
    tracers mean nothing once it returns. Said in words, not as jax's TracerArrayConversionError."""
    for e, t in zip(events, tensors):
        if isinstance(t, jax.core.Tracer):
            raise Unsupported(f"layer {e.layer!r} ran inside a jax transformation of the case's call (jax.vmap?): its "
                              "tensors cannot leave it, so layers are not compared (gradients still are); call the "
                              "model on the whole batch to compare them")


class _Calls:
    """Wraps ``__call__`` on the classes of ``layers`` (id -> (path, class name)) while open, so
    each call of one of those instances is logged; other instances of the classes pass through.
    A call a layer makes into its own class's parent (``super().__call__``) is logged once."""

    def __init__(self, layers: dict, classes: list, log: EventLog):
        self.layers, self.log = layers, log
        self.classes = [c for c in dict.fromkeys(classes) if any("__call__" in k.__dict__ for k in c.__mro__)]
        self.active = []       # ids of the layers being called, innermost last
        self.saved = []        # (class, its own __call__ or None when inherited)

    def __enter__(self):
        try:
            for cls in self.classes:
                self.saved.append((cls, cls.__dict__.get("__call__")))
                setattr(cls, "__call__", self._wrap(cls.__call__))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for cls, own in reversed(self.saved):
            if own is None:
                delattr(cls, "__call__")
            else:
                setattr(cls, "__call__", own)
        self.saved = []

    def _wrap(self, call):
        def logged(module, *args, **kwargs):
            hit = self.layers.get(id(module))
            if hit is None or (self.active and self.active[-1] == id(module)):
                return call(module, *args, **kwargs)
            self.active.append(id(module))
            try:
                self.log.enter(*hit, args)
                return self.log.leave(*hit, call(module, *args, **kwargs))
            finally:
                self.active.pop()
        return logged


__all__ = ["EquinoxGlue"]
