"""A neutral case's loss as a Program: what `harness repro` writes standalone scripts from, and
how the rediscovery report knows which ops each built-in case exercises.

The loss runs once against TracingOps, which computes every op in float64 numpy
(harness.fuzz.numpy_ops) and records it as a node. Leaves are the case's params (differentiated)
followed by its inputs; the traced output is the loss itself, so the program's weights are 1.
An op outside the fuzzer's opset, a native (per-framework) case or a module case cannot be
traced: TraceError says which.
"""
from __future__ import annotations

import numbers

import numpy as np

from harness.case import Case, ModuleCase
from harness.define.seeding import case_rng
from harness.errors import HarnessError
from harness.fuzz.generate import prune
from harness.fuzz.numpy_ops import NUMPY_OPS
from harness.fuzz.program import WEIGHTS, Node, Point, Program


class TraceError(HarnessError, ValueError):
    """A case that cannot be written as a standalone program (one line, exit 2)."""


class _Value:
    """A traced tensor: its node (or leaf) name and its float64 value."""

    def __init__(self, name: str, value):
        self.name, self.value = name, np.asarray(value)

    @property
    def shape(self):
        return self.value.shape

    # operators a neutral loss may use on an op's result (``ops.sum(x) / n``): forwarded to ops
    def __truediv__(self, other):
        return _TRACER.current.div(self, other)

    def __mul__(self, other):
        return _TRACER.current.mul(self, other)

    def __add__(self, other):
        return _TRACER.current.add(self, other)

    def __sub__(self, other):
        return _TRACER.current.sub(self, other)

    def __neg__(self):
        return _TRACER.current.neg(self)

    __rmul__, __radd__ = __mul__, __add__


class _Current:
    current = None


_TRACER = _Current()


class TracingOps:
    """The ops vocabulary, recording each call as a Node of the program being traced."""

    def __init__(self, leaves: dict):
        self.nodes: list = []
        self.leaves = leaves

    def __getattr__(self, op: str):
        if op.startswith("_") or not hasattr(NUMPY_OPS, op):
            raise TraceError(f"op '{op}' is outside what `harness repro` can write as a standalone program "
                             f"(the fuzzer's opset, harness/fuzz/generate.py)")

        def call(*args, **attrs):
            refs = [self._arg(a) for a in args]
            values = [a.value if isinstance(a, _Value) else a for a in args]
            with np.errstate(all="ignore"):
                out = getattr(NUMPY_OPS, op)(*values, **attrs)
            parts = range(len(out)) if isinstance(out, tuple) else [None]
            made = []
            for part in parts:   # a tuple result: one node per element (prune drops those unused)
                made.append(_Value(f"n{len(self.nodes)}", out if part is None else out[part]))
                self.nodes.append(Node(op, tuple(refs), tuple(sorted(_json(attrs).items())), part))
            return made[0] if parts == [None] else tuple(made)
        return call

    def _arg(self, a):
        if isinstance(a, _Value):
            return a.name
        if isinstance(a, (numbers.Number, list, tuple)) and not isinstance(a, bool):
            return {"const": _json(a)}
        raise TraceError(f"an argument of type {type(a).__name__} cannot be written into a standalone program")


def _json(value):
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def trace(case: Case, seed: int = 0) -> tuple:
    """(Program, Point, wrt) of a neutral case at the point a run with ``seed`` checks it at."""
    if isinstance(case, ModuleCase) or case.loss is None:
        raise TraceError(f"case {case.name!r} is written natively per framework or from modules; `harness repro` "
                         f"writes standalone scripts for cases over the neutral ops vocabulary")
    params, inputs, wrt = case.build(case_rng(seed, case.name))
    integer = [k for k, v in inputs.items() if not np.issubdtype(v.dtype, np.floating)]
    if integer:
        raise TraceError(f"case {case.name!r} has integer inputs {integer}: outside the fuzzer's programs")
    names = list(params) + list(inputs)
    leaves = {k: _Value(k, v) for k, v in {**params, **inputs}.items()}
    tracer = TracingOps(leaves)
    _TRACER.current = tracer
    try:
        out = case.loss(tracer, {k: leaves[k] for k in params}, {k: leaves[k] for k in inputs})
    finally:
        _TRACER.current = None
    if not isinstance(out, _Value) or not tracer.nodes:
        raise TraceError(f"case {case.name!r}: its loss does not return an op's result")
    program, renamed = prune(Program(tuple((k, leaves[k].shape) for k in names),
                                     tuple(tracer.nodes[:int(out.name[1:]) + 1])))
    # prune names leaves x0..: keep the case's names (one called like the loss's weights renamed)
    names = {v: k if k != WEIGHTS else f"{k}_" for k, v in renamed.items()}
    program = _named(program, names)
    values = {**params, **inputs}
    point = Point({names[x]: np.asarray(values[k], dtype=np.float64) for k, x in renamed.items()}, np.ones(out.shape))
    wrt = tuple(k if k != WEIGHTS else f"{k}_" for k in wrt)
    return program, point, tuple(wrt)


def _named(program: Program, names: dict) -> Program:
    """``program`` with its leaves renamed by ``names`` (x0 -> the case's parameter name)."""
    def rename(a):
        return names.get(a, a) if isinstance(a, str) else a
    nodes = tuple(Node(n.op, tuple(rename(a) for a in n.args), n.attrs, n.part) for n in program.nodes)
    return Program(tuple((names[k], s) for k, s in program.params), nodes)


__all__ = ["TraceError", "TracingOps", "trace"]
