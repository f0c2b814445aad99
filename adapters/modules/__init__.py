"""Module glue: the objects porters have (a torch.nn.Module, a Flax nnx or linen module, an
Equinox module, a Keras 3 model) seen as named parameters and a pure function of them.

``glue_for`` picks the glue by the module's class, importing only that glue (and so only its
framework): a torch worker never imports Flax. Which framework a glue needs is ``NEEDS``: a
Keras model runs in any worker whose framework is its backend.
"""
from __future__ import annotations

import importlib

from adapters.errors import Unsupported

#: (class-module prefix, glue module, glue class, frameworks it runs under)
KINDS = (
    ("torch.", "adapters.modules.torch_module", "TorchModuleGlue", ("torch",)),
    ("flax.nnx", "adapters.modules.flax_nnx", "NnxGlue", ("jax",)),
    ("flax.linen", "adapters.modules.flax_linen", "LinenGlue", ("jax",)),
    ("equinox", "adapters.modules.equinox_module", "EquinoxGlue", ("jax",)),
    ("keras", "adapters.modules.keras_model", "KerasGlue", ("torch", "jax", "tensorflow")),
)


def kind_of(module) -> tuple:
    """The KINDS row of ``module``, from the modules its class and its bases come from."""
    for cls in type(module).__mro__:
        origin = cls.__module__ or ""
        for row in KINDS:
            if origin == row[0].rstrip(".") or origin.startswith(row[0].rstrip(".") + "."):
                return row
    raise Unsupported(f"{type(module).__module__}.{type(module).__qualname__} is not a module the harness "
                      "knows (torch.nn.Module, flax nnx or linen Module, equinox Module, Keras 3 Model)")


def glue_for(adapter, module, call=None, train: bool = False):
    """The glue binding ``module`` to ``adapter`` (an Unsupported error when the module's
    framework is not the adapter's)."""
    prefix, where, name, frameworks = kind_of(module)
    if adapter.name not in frameworks:
        raise Unsupported(f"a {prefix.rstrip('.')} module cannot run under {adapter.name}")
    return getattr(importlib.import_module(where), name)(adapter, module, call, train)


def build_module(adapter, builder, dtype: str, seed: int, keras_model: bool = False):
    """The module ``builder()`` makes, its initial weights seeded by the task. A Keras model is
    built under a ``dtype`` policy (Keras casts inputs and creates variables in the policy it
    was built under) with Keras's global seed set; any other module through the adapter's own
    seeded build (its dtype follows the values it is given)."""
    if keras_model:
        from adapters.modules.keras_model import build_in

        return build_in(dtype, builder, seed)
    return adapter.seeded_build(builder, seed)


__all__ = ["KINDS", "build_module", "glue_for", "kind_of"]
