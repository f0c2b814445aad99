"""A generated program: a small DAG over the neutral ops vocabulary, and the exact point it is
checked at. JSON in and out, so a program travels to every framework's worker as a case file,
into findings.jsonl, and into the standalone repro scripts unchanged.

A program's parameters are its leaves (``params``: name -> shape); node ``k`` is named ``n<k>``
and calls ``ops.<op>(*args, **attrs)``, where each arg is a leaf's or an earlier node's name, or
a literal ``{"const": value}`` (a python number or a nested list, as the op's signature allows).
A node whose op returns a tuple (eigh, slogdet's callers) takes element ``part`` of it. The last
node is the program's output ``y``; the loss is ``sum(w * y)`` with ``w`` a random input of y's
shape, so a permuted or mis-broadcast gradient cannot hide in a plain sum.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from harness.case import Case

#: the input holding the loss's weights
WEIGHTS = "w"


@dataclass(frozen=True)
class Node:
    op: str
    args: tuple            # leaf / node names (str) or {"const": value}
    attrs: tuple = ()      # sorted (key, value) pairs, JSON values
    part: int | None = None

    def kwargs(self) -> dict:
        return dict(self.attrs)

    def refs(self) -> list:
        return [a for a in self.args if isinstance(a, str)]

    def to_json(self) -> dict:
        row = {"op": self.op, "args": [a if isinstance(a, str) else {"const": a["const"]} for a in self.args],
               "attrs": dict(self.attrs)}
        if self.part is not None:
            row["part"] = self.part
        return row

    @classmethod
    def from_json(cls, row: dict) -> "Node":
        args = tuple(a if isinstance(a, str) else {"const": a["const"]} for a in row["args"])
        return cls(row["op"], args, tuple(sorted(row.get("attrs", {}).items())), row.get("part"))


@dataclass(frozen=True)
class Program:
    params: tuple          # ((name, shape tuple), ...)
    nodes: tuple           # (Node, ...)

    @property
    def output(self) -> str:
        return f"n{len(self.nodes) - 1}"

    def shapes(self) -> dict:
        return {n: tuple(s) for n, s in self.params}

    def ops(self) -> list:
        """The ops it calls, in node order (repeats kept)."""
        return [n.op for n in self.nodes]

    def size(self) -> tuple:
        """What minimisation shrinks, most important first: ops, then elements."""
        return (len(self.nodes), sum(int(np.prod(s)) for _, s in self.params))

    def text(self) -> str:
        """One line per node, as a reader would write it: ``n1 = sum(n0, axis=1)``."""
        lines = [f"{n}: {list(s)}" for n, s in self.params]
        for k, node in enumerate(self.nodes):
            args = [a if isinstance(a, str) else repr(a["const"]) for a in node.args]
            args += [f"{key}={value!r}" for key, value in node.attrs]
            part = "" if node.part is None else f"[{node.part}]"
            lines.append(f"n{k} = {node.op}({', '.join(args)}){part}")
        lines.append(f"loss = sum(w * {self.output})")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"params": {n: list(s) for n, s in self.params}, "nodes": [n.to_json() for n in self.nodes]}

    @classmethod
    def from_json(cls, row: dict) -> "Program":
        return cls(tuple((n, tuple(s)) for n, s in row["params"].items()),
                   tuple(Node.from_json(n) for n in row["nodes"]))


def evaluate(ops, program: Program, values: dict):
    """The program's output y from ``values`` (leaf name -> tensor), with ``ops`` (any object with
    the vocabulary's methods: an adapter's ops, or harness.fuzz.numpy_ops)."""
    env = dict(values)
    for k, node in enumerate(program.nodes):
        args = [env[a] if isinstance(a, str) else a["const"] for a in node.args]
        out = getattr(ops, node.op)(*args, **node.kwargs())
        env[f"n{k}"] = out[node.part] if node.part is not None else out
    return env[program.output]


def loss(ops, program: Program, params: dict, inputs: dict):
    return ops.sum(ops.mul(evaluate(ops, program, params), inputs[WEIGHTS]))


@dataclass(frozen=True)
class Point:
    """The exact values a program is checked at: its leaves and the loss's weights, float64."""
    params: dict
    weights: np.ndarray
    styles: dict = field(default_factory=dict)   # leaf -> how it was drawn (normal, zeros, ties, ...)

    def to_json(self) -> dict:
        return {"params": {k: np.asarray(v).tolist() for k, v in self.params.items()},
                "weights": np.asarray(self.weights).tolist(), "styles": dict(self.styles)}

    @classmethod
    def from_json(cls, row: dict, program: Program) -> "Point":
        shapes = program.shapes()
        params = {k: np.asarray(v, dtype=np.float64).reshape(shapes[k]) for k, v in row["params"].items()}
        return cls(params, np.asarray(row["weights"], dtype=np.float64), dict(row.get("styles", {})))


def to_case(name: str, program: Program, point: Point, tags=(), extend=None) -> Case:
    """A neutral Case that checks ``program`` at exactly ``point`` (make ignores its rng);
    ``extend(ops)``: the ops namespace with a user's extra ops (harness.fuzz.extra_ops)."""
    def make(_rng):
        return ({k: v.copy() for k, v in point.params.items()}, {WEIGHTS: point.weights.copy()})

    def program_loss(ops, params, inputs):
        return loss(extend(ops) if extend else ops, program, params, inputs)

    return Case(name=name, make=make, loss=program_loss, tags=("fuzz", *tags), doc=program.text().replace("\n", "; "))


def member_param(index: int, leaf: str) -> str:
    """A pack's name for member ``index``'s leaf."""
    return f"p{index}_{leaf}"


def member_of(param: str):
    """(member index, leaf) of a pack's parameter name, or None (``*``, or not a pack's)."""
    head, _, leaf = param.partition("_")
    return (int(head[1:]), leaf) if head[:1] == "p" and head[1:].isdigit() and leaf else None


def pack_case(name: str, members: list, tags=(), extend=None) -> Case:
    """One case that checks several programs at once, each at its own point: the loss is the sum of
    their losses over disjoint leaves (``p<i>_<leaf>``), so every leaf's gradient is its own
    program's and a per-parameter record names the member that diverges. A screen: workers start
    and compile once for the pack, and only the members of a pack that fails are run alone."""
    def make(_rng):
        params = {member_param(i, k): v.copy() for i, (_, point) in enumerate(members) for k, v in point.params.items()}
        return params, {f"{WEIGHTS}{i}": point.weights.copy() for i, (_, point) in enumerate(members)}

    def pack_loss(ops, params, inputs):
        ops = extend(ops) if extend else ops
        total = None
        for i, (program, _) in enumerate(members):
            own = {k: params[member_param(i, k)] for k, _ in program.params}
            part = loss(ops, program, own, {WEIGHTS: inputs[f"{WEIGHTS}{i}"]})
            total = part if total is None else ops.add(total, part)
        return total

    doc = " | ".join(p.text().replace("\n", "; ") for p, _ in members)
    return Case(name=name, make=make, loss=pack_loss, tags=("fuzz", "pack", *tags), doc=doc)


def case_file_text(json_name: str, extra_ops: str | None = None) -> str:
    """A case file that loads the programs of ``json_name`` (beside it): what `harness run
    --cases FILE` (and each worker) imports; ``extra_ops``: the user's ops file they use."""
    extra = f", extra_ops={str(extra_ops)!r}" if extra_ops else ""
    return ("\"\"\"Programs generated by `harness fuzz`: each a neutral case at its exact point.\"\"\"\n"
            "from pathlib import Path\n\n"
            "from harness.fuzz.program import cases_from_file\n\n"
            f"CASES = cases_from_file(Path(__file__).with_name({json_name!r}){extra})\n")


def cases_from_file(path, extra_ops: str | None = None) -> list:
    """The cases of a programs file: a JSON list of {name, program, point, tags} (a pack: {name,
    members: [{program, point}], tags})."""
    rows = json.loads(open(path).read())
    extend = None
    if extra_ops:
        from harness.fuzz.extra_ops import ExtendedOps, load   # noqa: PLC0415 - only a user's ops need it

        extras = load(extra_ops)

        def extend(ops):
            return ExtendedOps(ops, extras)
    cases = []
    for row in rows:
        tags = tuple(row.get("tags", ()))
        if "members" in row:
            members = [(Program.from_json(m["program"]), m["point"]) for m in row["members"]]
            members = [(p, Point.from_json(pt, p)) for p, pt in members]
            cases.append(pack_case(row["name"], members, tags, extend))
            continue
        program = Program.from_json(row["program"])
        cases.append(to_case(row["name"], program, Point.from_json(row["point"], program), tags, extend))
    return cases


__all__ = ["Node", "Point", "Program", "WEIGHTS", "case_file_text", "cases_from_file", "evaluate", "loss",
           "member_of", "member_param", "pack_case", "to_case"]
