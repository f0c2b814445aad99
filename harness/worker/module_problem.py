"""A module case bound to one adapter and dtype: the reference module's parameters, mapped onto
this framework's module inside the differentiated function.

The point every framework is checked at is the reference module's own tensors (float64, its
names, its layout), so each framework's gradient arrives in those names and layout by its own
autodiff through the mapping's transposes, splits and sums; the judge then compares them like
any hand-written case's. A worker whose framework is not the reference's gets the reference's
tensors from a one-off process of the reference framework (harness/worker/describe.py), or,
in a process that holds every framework (the in-process runner), from that framework's adapter.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from adapters.modules import build_module, glue_for
from adapters.modules.base import Param
from harness.case import CaseError, ModuleCase, input_digest
from harness.define.port_mapping import Link, layer_pairs, match
from harness.define.seeding import case_rng


def bind(adapter, case: ModuleCase, dtype: str, seed: int):
    """(glue, native inputs, params in call order): the framework's module built (its RNGs
    seeded by the task) and traced once on the case's inputs."""
    _none, inputs, _ = case.build(case_rng(seed, case.name))
    native_inputs = {k: adapter.asarray(v, dtype) for k, v in inputs.items()}
    module = build_module(adapter, case.builder(adapter.name), dtype, seed, keras_model="keras" in case.modules)
    glue = glue_for(adapter, module, case.call_for(adapter.name), case.train)
    glue.prepare(native_inputs)
    return (glue, inputs, native_inputs) + call_ordered(adapter, glue, native_inputs, dtype)


def call_ordered(adapter, glue, native_inputs, dtype: str) -> tuple:
    """(params, layers): the glue's params ordered by the first call of the layer owning them
    (then their listing), the order two frameworks' modules share whatever their listing order
    (nnx sorts by name); and its layers as layer_order gives them."""
    own = glue.values()
    values = {p.path: adapter.asarray(own[p.path], dtype) for p in glue.params()}
    _, events, _ = glue.traced(values, native_inputs, None)
    first = {}
    for e in events:
        first.setdefault(e.layer, e.index)

    def when(p):
        layer = p.layer
        while layer and layer not in first:
            layer = layer.rpartition("." if "." in layer else "/")[0]
        return first.get(layer, len(events))

    listed = glue.params()
    return sorted(listed, key=lambda p: (when(p), listed.index(p))), layer_order(events)


def layer_order(events) -> list:
    """[[layer, layer_type, calls]] in the order of their first output: a layer's children come
    before it (they finish first), which is the order a forward divergence travels in."""
    rows: dict = {}
    for e in events:
        if e.at == "out":
            rows.setdefault(e.layer, [e.layer, e.layer_type, 0])[2] += 1
    return list(rows.values())


def reference_state(adapter, case: ModuleCase, seed: int) -> dict:
    """What every framework's check of ``case`` starts from, made by the reference framework's
    adapter: {'params': [Param rows in call order], 'values': {name: float64 array}, 'kind'}."""
    glue, _inputs, _native, params, layers = bind(adapter, case, "float64", seed)
    return _state(glue, params, layers)


def _state(glue, params: list, layers: list) -> dict:
    values = glue.values()
    return {"params": [p.to_json() for p in params], "values": {p.path: values[p.path] for p in params},
            "kind": glue.kind, "layers": layers}


def reference_from_process(framework: str, case: ModuleCase, seed: int) -> dict:
    """reference_state made by a fresh worker process of ``framework`` (its own environment,
    Keras on its backend), for a worker of another framework."""
    if not case.source or case.source == "<memory>":
        raise CaseError(f"case {case.name}: a module case checked outside the in-process runner must live in a "
                        "case file (the reference framework's process loads it from there)")
    env = {**os.environ, "KERAS_BACKEND": framework}
    with tempfile.TemporaryDirectory(prefix="harness-reference-") as tmp:
        out = os.path.join(tmp, "reference.npz")
        done = subprocess.run([sys.executable, "-m", "harness.worker.describe", framework, case.source, case.name,
                               str(seed), out], env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"the reference module ({framework}) could not be built: {tail}")
        with np.load(out) as data:
            meta = json.loads(str(data["__meta__"]))
            return {**meta, "values": {n: data[f"v/{n}"] for n in meta["order"]}}


class ModuleProblem:
    """Problem's interface (observe.py) for a module case: ``f(*ws)`` over the reference's
    trainable tensors in its layout, ``xs`` those tensors as this framework's, ``links`` the
    mapping used (identity on the reference framework itself)."""

    def __init__(self, adapter, case: ModuleCase, dtype: str, seed: int, reference=None, made=None):
        self.adapter, self.case, self.dtype = adapter, case, dtype
        glue, inputs, native_inputs, own, own_layers = bind(adapter, case, dtype, seed)
        ref_fw = case.reference_framework()
        if made is not None:
            state = made
        elif adapter.name == ref_fw and dtype == "float64":
            state = _state(glue, own, own_layers)
        elif adapter.name == ref_fw:
            # the point is the float64 module's: a module built in another dtype (a Keras model under
            # a float32 policy) draws other initial values
            state = reference_state(adapter, case, seed)
        elif reference is not None:
            state = reference_state(reference(ref_fw), case, seed)
        else:
            state = reference_from_process(ref_fw, case, seed)
        self.made = state
        ref = [Param.from_json(r) for r in state["params"]]
        self.ref_layers = [tuple(row) for row in state.get("layers", [])]
        self.own_layers = {row[0]: tuple(row) for row in own_layers}
        if adapter.name == ref_fw:
            self.links = [Link((p.path,), (p.path,)) for p in ref]
            self.layer_map = {row[0]: row[0] for row in own_layers}
        else:
            self.links = match(ref, own, case.pinned(adapter.name))
            self.layer_map = layer_pairs([row[0] for row in self.ref_layers], list(self.own_layers), self.links,
                                         ref, own)
        self.param_layers = {p.path: p.layer for p in ref}
        trainable = [p.path for p in ref if p.trainable]
        self.wrt = tuple(case.wrt or trainable)
        unknown = [w for w in self.wrt if w not in trainable]
        if unknown:
            raise CaseError(f"case {case.name}: wrt names {unknown}, not trainable tensors of the reference module")
        values = state["values"]
        self.canonical = {n: values[n] for n in self.wrt}
        self.digest = input_digest(self.canonical, inputs)
        self.xs = [adapter.asarray(values[n], dtype) for n in self.wrt]
        fixed = {n: adapter.asarray(v, dtype) for n, v in values.items() if n not in self.wrt}
        kind, loss = case.implementation(adapter.name)
        ops, links, wrt = adapter.ops, self.links, self.wrt

        def port_values(ws) -> dict:
            tensors = {**fixed, **dict(zip(wrt, ws))}
            port = {}
            for link in links:
                port.update(apply_link(ops, link, tensors))
            return port

        def loss_of(out):
            return loss(ops, out, native_inputs) if kind == "neutral" else loss(out, native_inputs)

        def f(*ws):
            return loss_of(glue.apply(port_values(ws), native_inputs))
        self.f, self._port_values, self._loss_of = f, port_values, loss_of
        self.glue, self.native_inputs = glue, native_inputs

    def mapping_rows(self) -> list:
        return [link.to_json() for link in self.links]

    def layers(self, arrays: dict) -> dict:
        """Each corresponding layer's input, output and the loss's gradient with respect to that
        output, at the task's point, into ``arrays`` (``layer_in/``, ``layer_out/``,
        ``layer_grad/``, keyed by the reference's layer path) and, for the judge, the layers in
        the reference's order: rows of layer, port_layer, layer_type, calls. A layer called more
        than once (shared, looped) is compared on its first call and has no single output gradient."""
        port = self._port_values(self.xs)
        out, events, tensors = self.glue.traced(port, self.native_inputs, None)
        self.glue.check_tensors(out, events, tensors)
        first = {}
        for e, t in zip(events, tensors):
            first.setdefault((e.layer, e.at), t)
        rows, tapped = [], []
        for layer, layer_type, _calls in self.ref_layers:
            mine = self.layer_map.get(layer)
            if mine is None or (mine, "out") not in first:
                rows.append({"layer": layer, "port_layer": None, "layer_type": layer_type, "calls": 0})
                continue
            calls = self.own_layers[mine][2]
            rows.append({"layer": layer, "port_layer": mine, "layer_type": self.own_layers[mine][1], "calls": calls})
            for at in ("in", "out"):
                if (mine, at) in first:
                    arrays[f"layer_{at}/{layer}"] = self.adapter.to_numpy(first[(mine, at)])
            if calls == 1 and np.issubdtype(arrays[f"layer_out/{layer}"].dtype, np.floating):
                tapped.append((layer, mine))
        if tapped:
            zeros = [first[(mine, "out")] * 0 for _, mine in tapped]
            names = [mine for _, mine in tapped]
            call = self.adapter.grad_fn(
                lambda *taps: self._loss_of(self.glue.traced(port, self.native_inputs, dict(zip(names, taps)))[0]),
                False)
            _, grads = self.adapter.grad_result_np(call(*zeros), zeros)
            for (layer, _), g in zip(tapped, grads):
                arrays[f"layer_grad/{layer}"] = g
        return {"status": "ok", "rows": rows}

    def to_canonical(self, arrays):
        return list(arrays)

    def to_native(self, arrays, dtype=None):
        return [self.adapter.asarray(a, dtype or self.dtype) for a in arrays]


def apply_link(ops, link: Link, tensors: dict) -> dict:
    """The port's tensors of one link from the reference's, with the framework's own ops (so
    autodiff carries the gradient back through them)."""
    xs = [tensors[n] for n in link.ref]
    for op, *args in link.steps:
        if op == "sum":
            total = xs[0]
            for x in xs[1:]:
                total = total + x
            xs = [total]
        elif op == "perm":
            xs = [ops.transpose(x, tuple(args[0])) for x in xs]
        elif op == "gates":
            axis, order = args
            chunks = _chunks(xs[0], len(order), axis)
            xs = [ops.concat([chunks[i] for i in order], axis)]
        elif op == "split":
            axis, k = args
            xs = _chunks(xs[0], k, axis)
    return dict(zip(link.port, xs))


def _chunks(x, k: int, axis: int) -> list:
    n = x.shape[axis] // k
    lead = (slice(None),) * (axis % len(x.shape))
    return [x[lead + (slice(i * n, (i + 1) * n),)] for i in range(k)]


__all__ = ["ModuleProblem", "apply_link", "bind", "call_ordered", "layer_order", "reference_from_process",
           "reference_state"]
