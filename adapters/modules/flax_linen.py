"""Glue for a ``flax.linen.Module``: its variables by '/'-joined name ('params' first, then
state collections such as 'batch_stats'), evaluated with ``module.apply`` on variables built
from the values passed in, layers traced with ``flax.linen.intercept_methods``.

A linen module holds no variables, and ``init`` needs inputs to shape them, so the glue has
none until ``prepare(inputs)`` (the harness calls it with the case's inputs before anything
else); ``prepare(inputs, variables=...)`` adopts a trained module's variables instead.

Dtypes follow the values: linen's Dense, Conv, Embed and the norm layers infer their
computation dtype from their inputs and variables when ``dtype`` is None (their default), so
float64 values compute in float64 although ``init`` made float32 parameters. A layer built
with an explicit ``dtype=`` computes in that dtype whatever the values are; the glue casts
nothing.

A layer inside a lifted transform (``nn.remat``, ``nn.scan``, ``nn.vmap``) records that
transform's tracers, which cannot be used once the call returns; its variables are named and
evaluated as any other's.

With ``train``, batch statistics are mutable (``mutable=['batch_stats']``) and their updates
are discarded: the output is a pure function of the values, and the module's own statistics
never change. Dropout draws from a fixed key (0), so a train-mode call is deterministic.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import traverse_util

from adapters.errors import Unsupported
from adapters.modules.base import EventLog, ModuleGlue, Param, as_float64

_DENSE = ("Dense", "DenseGeneral")
_CONVS = ("Conv",)   # ConvTranspose shares the layout but not the meaning of torch's: left plain
_NORMS = ("LayerNorm", "BatchNorm", "GroupNorm", "RMSNorm", "InstanceNorm")
#: collections init fills that are not state: what ``sow`` records
_NOT_STATE = ("intermediates",)


def _role(layer_type: str, collection: str, local: str) -> str:
    """The role of variable ``local`` of collection ``collection`` in a layer of class ``layer_type``."""
    if collection != "params":
        return "stat" if layer_type == "BatchNorm" and local in ("mean", "var") else "plain"
    if local == "bias":
        return "bias"
    if local == "kernel" and layer_type in _DENSE:
        return "dense.in_out"
    if local == "kernel" and layer_type in _CONVS:
        return "conv.spatial_in_out"
    if local == "embedding" and layer_type == "Embed":
        return "embedding"
    if local == "scale" and layer_type in _NORMS:
        return "scale"
    return "plain"


def _floating(value) -> bool:
    return jnp.issubdtype(jnp.result_type(value), jnp.floating)


class LinenGlue(ModuleGlue):
    kind = "flax.linen.Module"

    def __init__(self, adapter, module, call=None, train: bool = False):
        super().__init__(adapter, module, call, train)
        self._variables = None   # collection -> {path tuple: value}, in init's order
        self._params = None
        self._where = {}         # Param path -> (collection, path tuple)

    # ---- preparation ------------------------------------------------------------------
    def prepare(self, inputs: dict, variables: dict | None = None) -> None:
        """Initialise the module's variables from ``inputs`` (key 0), once; or adopt
        ``variables`` (a trained module's, as ``init`` returns them). A later call without
        ``variables`` keeps what the glue has."""
        if variables is None and self._variables is not None:
            return
        types = {}

        def record(next_fun, args, kwargs, context):
            types.setdefault(tuple(context.module.scope.path), type(context.module).__name__)
            return next_fun(*args, **kwargs)

        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
        with nn.intercept_methods(record):
            if variables is None:
                variables = self.module.init(rngs, inputs, method=self._method)
            else:   # a dry run, only for the layer types
                jax.eval_shape(lambda: self.module.init(rngs, inputs, method=self._method))
        flat = {c: traverse_util.flatten_dict(dict(tree)) for c, tree in dict(variables).items()
                if c not in _NOT_STATE}
        params, where = [], {}
        for collection in sorted(flat, key=lambda c: c != "params"):   # params first, then state, each in order
            for keys, value in flat[collection].items():
                if not _floating(value):
                    continue
                path = "/".join(keys)
                if path in where:
                    raise Unsupported(f"{path!r} names a variable of both {where[path][0]!r} and {collection!r}; "
                                      "the glue names variables without their collection")
                layer_type = types.get(tuple(keys[:-1]), "Module")   # each module that ran, the root included
                params.append(Param(path, tuple(jnp.shape(value)), "/".join(keys[:-1]), layer_type,
                                    _role(layer_type, collection, keys[-1]), collection == "params"))
                where[path] = (collection, keys)
        self._variables, self._params, self._where = flat, params, where

    # ---- structure --------------------------------------------------------------------
    def params(self) -> list:
        return list(self._prepared())

    def values(self) -> dict:
        self._prepared()
        return {p: as_float64(self._variables[c][k]) for p, (c, k) in self._where.items()}

    # ---- evaluation -------------------------------------------------------------------
    def traced(self, values: dict, inputs: dict, taps: dict | None):
        self._prepared()
        unknown = [n for n in values if n not in self._where]
        if unknown:
            raise KeyError(f"not variables of the module: {unknown}")
        flat = {c: dict(tree) for c, tree in self._variables.items()}
        for path, value in values.items():
            collection, keys = self._where[path]
            flat[collection][keys] = value
        variables = {c: traverse_util.unflatten_dict(tree) for c, tree in flat.items()}
        log = EventLog(lambda x: isinstance(x, jax.Array), taps)

        def trace(next_fun, args, kwargs, context):
            path = tuple(context.module.scope.path)
            if context.method_name != "__call__" or not path:   # the root is not a layer
                return next_fun(*args, **kwargs)
            name, kind = "/".join(path), type(context.module).__name__
            log.enter(name, kind, args)
            return log.leave(name, kind, next_fun(*args, **kwargs))

        with nn.intercept_methods(trace):
            if self.train:
                out, _updates = self.module.apply(variables, inputs, method=self._method, mutable=["batch_stats"],
                                                  rngs={"dropout": jax.random.key(0)})
            else:
                out = self.module.apply(variables, inputs, method=self._method)
        return out, log.events, log.tensors

    # ---- helpers ------------------------------------------------------------------------
    def _method(self, module, inputs):
        """The call as linen's ``init``/``apply(method=)`` make it: ``fn(bound_module, *args)``."""
        return self.call_model(module, inputs)

    def _prepared(self) -> list:
        if self._params is None:
            raise RuntimeError("a linen module has no variables until prepare(inputs) initialises them; "
                               "call glue.prepare(inputs) first")
        return self._params


__all__ = ["LinenGlue"]
