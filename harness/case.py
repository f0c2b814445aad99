"""The public case API: a model or loss written once, run on every framework.

A case makes its parameters and inputs once, in float64 numpy, in canonical layout. Its loss is
either neutral (``loss(ops, params, inputs)``, against the ops vocabulary of
harness/define/ops_spec.py) or native per framework (``native[fw](params, inputs)`` receiving that
framework's tensors). Where a native layer stores a parameter in another layout (torch's Linear
weight is (out, in); the canonical dense weight is (in, out)), ``layout`` names the axis
permutation explicitly, and the harness applies it on the way in and inverts it on the gradient
on the way out, so every gradient is compared in canonical layout.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from harness.errors import HarnessError

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class CaseError(HarnessError, ValueError):
    """A malformed case definition: reported as one line, exit code 2."""


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable
    loss: Callable | None = None
    native: dict | None = None
    wrt: tuple | None = None
    tags: tuple = ()
    doc: str = ""
    tolerance: dict | None = None
    layout: dict | None = None
    #: where this case was defined (filled by the loader; shown in errors)
    source: str = field(default="", compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise CaseError(f"case name {self.name!r} must be letters, digits, '_', '.' or '-'")
        if not callable(self.make):
            raise CaseError(f"case {self.name}: make must be callable make(rng) -> (params, inputs)")
        if self.loss is None and not self.native:
            raise CaseError(f"case {self.name}: give loss=(ops, params, inputs) or native={{fw: fn}}")
        if self.loss is not None and not callable(self.loss):
            raise CaseError(f"case {self.name}: loss must be callable")
        if self.native is not None:
            if not isinstance(self.native, dict) or not all(callable(v) for v in self.native.values()):
                raise CaseError(f"case {self.name}: native must map framework name -> callable")
        object.__setattr__(self, "tags", tuple(self.tags))
        if self.wrt is not None:
            wrt = (self.wrt,) if isinstance(self.wrt, str) else tuple(self.wrt)
            if not wrt:
                raise CaseError(f"case {self.name}: wrt names no parameter")
            object.__setattr__(self, "wrt", wrt)
        for fw, perms in (self.layout or {}).items():
            for param, perm in perms.items():
                if sorted(perm) != list(range(len(perm))):
                    raise CaseError(f"case {self.name}: layout[{fw}][{param}]={perm} is not a permutation")

    # ---- used by the worker and the planner ---------------------------------------------
    def frameworks(self, available) -> list:
        """The frameworks among ``available`` this case has an implementation for."""
        return [fw for fw in available if self.loss is not None or fw in (self.native or {})]

    def implementation(self, framework: str):
        """(kind, fn): ('native', fn(params, inputs)) or ('neutral', fn(ops, params, inputs))."""
        if self.native and framework in self.native:
            return "native", self.native[framework]
        if self.loss is not None:
            return "neutral", self.loss
        return None, None

    def build(self, rng: np.random.Generator):
        """Call make and check what it returned: dicts of float64 (or integer) arrays."""
        made = self.make(rng)
        if not (isinstance(made, tuple) and len(made) == 2):
            raise CaseError(f"case {self.name}: make must return (params, inputs)")
        params, inputs = (self._arrays(part, what) for part, what in zip(made, ("params", "inputs")))
        if not params:
            raise CaseError(f"case {self.name}: make returned no params")
        wrt = self.wrt or tuple(params)
        missing = [w for w in wrt if w not in params]
        if missing:
            raise CaseError(f"case {self.name}: wrt names unknown params {missing}; params are {list(params)}")
        bad = [w for w in wrt if not np.issubdtype(params[w].dtype, np.floating)]
        if bad:
            raise CaseError(f"case {self.name}: cannot differentiate non-floating params {bad}")
        return params, inputs, tuple(wrt)

    def _arrays(self, part, what):
        if not isinstance(part, dict):
            raise CaseError(f"case {self.name}: make's {what} must be a dict of arrays")
        out = {}
        for key, value in part.items():
            foreign = _foreign(value)
            if foreign:
                raise CaseError(f"case {self.name}: make's {what}[{key!r}] is {foreign}, not a numpy array: build it "
                                "with numpy from make's rng, so every framework gets the same values")
            a = np.asarray(value)
            if np.issubdtype(a.dtype, np.floating):
                a = a.astype(np.float64)
            elif not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
                raise CaseError(f"case {self.name}: {what}[{key!r}] has dtype {a.dtype}")
            out[key] = a
        return out

    def to_native_layout(self, framework: str, name: str, array: np.ndarray) -> np.ndarray:
        perm = (self.layout or {}).get(framework, {}).get(name)
        return array if perm is None else np.ascontiguousarray(np.transpose(array, perm))

    def from_native_layout(self, framework: str, name: str, array: np.ndarray) -> np.ndarray:
        perm = (self.layout or {}).get(framework, {}).get(name)
        return array if perm is None else np.ascontiguousarray(np.transpose(array, np.argsort(perm)))

    def summary(self) -> str:
        return (self.doc or "").strip().splitlines()[0] if self.doc else ""


#: the frameworks a Keras 3 model runs under, one worker (one Keras backend) each
KERAS_BACKENDS = ("torch", "jax", "tensorflow")


@dataclass(frozen=True)
class ModuleCase(Case):
    """A case from the modules a porter has: ``modules`` maps a framework (or ``'keras'``: one
    Keras 3 model definition, run under each Keras backend) to a builder returning the module;
    ``make(rng)`` returns the inputs only; ``loss(ops, output, inputs)`` is neutral (or
    ``native[fw](output, inputs)``). The parameters are the reference module's (``reference``,
    default torch, else the first framework), named and laid out as it has them; every other
    framework's module gets the same values through the weight mapping
    (harness/define/port_mapping.py), ``mapping={fw: {reference name: port name}}`` pinning any
    pair by name. ``call`` (one function or one per framework) says how the model is called,
    ``call(model, inputs)``; by default on the inputs positionally. ``train``: training mode
    (batch statistics, dropout) instead of evaluation mode."""
    modules: dict | None = None
    call: object = None
    mapping: dict | None = None
    reference: str | None = None
    train: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.modules, dict) or not self.modules or \
                not all(callable(b) for b in self.modules.values()):
            raise CaseError(f"case {self.name}: modules must map a framework (or 'keras') to a builder() -> module")
        if "keras" in self.modules and len(self.modules) > 1:
            raise CaseError(f"case {self.name}: a 'keras' model runs under every backend; give it alone")
        if self.reference is not None and self.reference not in self.frameworks(KERAS_BACKENDS):
            raise CaseError(f"case {self.name}: reference {self.reference!r} is not one of its frameworks")

    def frameworks(self, available) -> list:
        return [fw for fw in available if fw in self.modules or "keras" in self.modules]

    def reference_framework(self) -> str:
        if self.reference:
            return self.reference
        if "keras" in self.modules:
            return "tensorflow"
        return "torch" if "torch" in self.modules else next(iter(self.modules))

    def builder(self, framework: str):
        return self.modules.get(framework) or self.modules.get("keras")

    def call_for(self, framework: str):
        return self.call.get(framework) if isinstance(self.call, dict) else self.call

    def pinned(self, framework: str) -> dict:
        return dict((self.mapping or {}).get(framework) or {})

    def build(self, rng: np.random.Generator):
        """Only the inputs are made here (the parameters are the reference module's):
        (None, inputs, None)."""
        made = self.make(rng)
        if not isinstance(made, dict):
            raise CaseError(f"case {self.name}: a module case's make returns the inputs, a dict of arrays")
        return None, self._arrays(made, "inputs"), None


def _foreign(value) -> str:
    """What ``value`` is ('a torch.Tensor', 'a list holding a jaxlib.ArrayImpl') when it is not
    numpy or plain Python numbers; '' when it is. A framework tensor is refused rather than
    converted: one made by that framework's own generator (torch.randn) differs per framework."""
    if isinstance(value, (np.ndarray, np.generic, bool, int, float, complex)):
        return ""
    if isinstance(value, (list, tuple)):
        inner = next((f for f in map(_foreign, value) if f), "")
        return f"a {type(value).__name__} holding {inner}" if inner else ""
    kind = type(value)
    module = kind.__module__.split(".")[0]
    return f"a {kind.__qualname__}" if module == "builtins" else f"a {module}.{kind.__qualname__}"


def input_digest(params: dict, inputs: dict) -> str:
    """sha256 over the names, dtypes, shapes and bytes of what make built (sorted by name): two
    observations are of the same function at the same point only when their digests agree, so
    the judge compares nothing else (a make drawing from torch's unseeded generator differs)."""
    h = hashlib.sha256()
    for part, arrays in (("params", params), ("inputs", inputs)):
        for name in sorted(arrays):
            a = np.ascontiguousarray(arrays[name])
            a = a.astype(a.dtype.newbyteorder("<"), copy=False)
            h.update(json.dumps([part, name, a.dtype.str, list(a.shape)]).encode())
            h.update(a.tobytes())
    return h.hexdigest()


__all__ = ["Case", "CaseError", "KERAS_BACKENDS", "ModuleCase", "input_digest"]
