"""Random programs over the neutral ops vocabulary, valid by construction where it is cheap, and
the points that matter for gradients.

Each op of OPSET says what its arguments must be (a slot kind: any tensor, one of the same
shape, a square matrix, a matrix that multiplies, a vector of the last axis, ...) and draws its
attributes from their valid domains. A program grows by ops whose first argument is usually the
newest value (chains, where gradients compound) and whose other arguments are existing values
that fit or new leaves made to fit; nodes the output does not use are dropped. A leaf made for a
slot carries its domain (positive for log and sqrt, above -1 for log1p, nonzero for a divisor,
SPD for cholesky) and the point draws it from that domain -- randomly, or at an edge that matters
for gradients: exact zeros, ties, clip bounds, singular and repeated-eigenvalue matrices, large
and small magnitudes. The float64 forward (harness.fuzz.numpy_ops) then says whether the program
is valid; an invalid one is discarded with its reason counted (Stats).
"""
from __future__ import annotations

import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from harness.fuzz.extra_ops import ExtendedOps
from harness.fuzz.numpy_ops import NUMPY_OPS
from harness.fuzz.program import Node, Point, Program, evaluate


#: ops that read one triangle of a matrix: generated on a symmetrised input (harness.fuzz.triage
#: reports any other input as default semantics)
SYMMETRIC_INPUT = ("eigh", "cholesky")


@dataclass(frozen=True)
class OpSpec:
    name: str
    slots: tuple                     # the kind of each tensor argument (see _value_for)
    attrs: object = None             # rng, shape of arg 0 -> dict of attributes (or None: invalid)
    domain: str = "any"              # domain of arg 0 where it is a new leaf
    part: int | None = None          # element of a tuple result
    smooth: bool = True              # differentiable everywhere in its domain
    weight: float = 1.0


def _axis_attrs(rng, shape, keepdims=True, extra=None):
    attrs = {"axis": int(rng.integers(len(shape))) if shape and rng.random() < 0.8 else None}
    if keepdims:
        attrs["keepdims"] = bool(rng.random() < 0.3) and attrs["axis"] is not None
    if extra:
        attrs.update(extra(rng))
    return attrs


def _reduce(name, smooth=True, extra=None, domain="any", weight=1.0):
    return OpSpec(name, ("x",), lambda rng, shape: _axis_attrs(rng, shape, extra=extra), domain, smooth=smooth,
                  weight=weight)


def _along(name, smooth=True):
    return OpSpec(name, ("x",), lambda rng, shape: {"axis": int(rng.integers(len(shape)))} if shape else None,
                  smooth=smooth)


def _bounds(lo_name, hi_name):
    def draw(rng, _shape):
        lo = float(rng.choice([-1.0, -0.5, 0.0]))
        return {lo_name: lo, hi_name: lo + float(rng.choice([0.5, 1.0, 2.0]))}
    return draw


OPSET = {s.name: s for s in [
    # elementwise, smooth
    OpSpec("neg", ("x",)), OpSpec("square", ("x",)), OpSpec("exp", ("x",)), OpSpec("expm1", ("x",)),
    OpSpec("sin", ("x",)), OpSpec("cos", ("x",)), OpSpec("tanh", ("x",)), OpSpec("sigmoid", ("x",)),
    OpSpec("erf", ("x",)), OpSpec("silu", ("x",)), OpSpec("softplus", ("x",)),
    OpSpec("tan", ("x",), domain="unit"),
    OpSpec("sqrt", ("x",), domain="positive"), OpSpec("rsqrt", ("x",), domain="positive"),
    OpSpec("log", ("x",), domain="positive"), OpSpec("log1p", ("x",), domain="above-1"),
    OpSpec("gelu", ("x",), lambda rng, _s: {"approximate": bool(rng.random() < 0.5)}),
    OpSpec("elu", ("x",), lambda rng, _s: {"alpha": float(rng.choice([1.0, 0.5]))}),
    OpSpec("selu", ("x",), smooth=False),
    # elementwise with kinks or steps
    OpSpec("abs", ("x",), smooth=False), OpSpec("relu", ("x",), smooth=False),
    OpSpec("relu6", ("x",), smooth=False),
    OpSpec("leaky_relu", ("x",), lambda rng, _s: {"negative_slope": float(rng.choice([0.01, 0.2]))}, smooth=False),
    OpSpec("clip", ("x",), _bounds("lo", "hi"), smooth=False),
    OpSpec("sign", ("x",), smooth=False, weight=0.3), OpSpec("floor", ("x",), smooth=False, weight=0.3),
    OpSpec("round", ("x",), smooth=False, weight=0.3),
    # binary
    OpSpec("add", ("x", "same")), OpSpec("sub", ("x", "same")), OpSpec("mul", ("x", "same"), weight=1.5),
    OpSpec("div", ("x", "nonzero")), OpSpec("atan2", ("x", "same")),
    OpSpec("pow", ("x", "exponent"), domain="positive"),
    OpSpec("maximum", ("x", "same"), smooth=False), OpSpec("minimum", ("x", "same"), smooth=False),
    OpSpec("where", ("condition", "same", "same"), smooth=False, weight=0.7),
    # reductions and scans
    _reduce("sum"), _reduce("mean"), _reduce("prod"), _reduce("logsumexp"),
    _reduce("max", smooth=False), _reduce("min", smooth=False),
    _reduce("amax", smooth=False), _reduce("amin", smooth=False),
    _reduce("var", extra=lambda rng: {"ddof": int(rng.integers(2))}),
    _reduce("std", extra=lambda rng: {"ddof": int(rng.integers(2))}, smooth=False),
    _reduce("norm", extra=lambda rng: {"ord": float(rng.choice([1.0, 2.0, 3.0, float("inf")]))}, smooth=False),
    _along("cumsum"), _along("cumprod"), _along("softmax"), _along("log_softmax"),
    OpSpec("layer_norm", ("x", "last", "last"), lambda rng, s: {"eps": float(rng.choice([1e-5, 1e-3]))} if s else None),
    # linear algebra
    OpSpec("matmul", ("matrix", "multiplies"), weight=1.5),
    OpSpec("transpose", ("matrix",), weight=0.5),
    OpSpec("inv", ("square",), domain="square"), OpSpec("det", ("square",), domain="square"),
    OpSpec("slogdet", ("square",), domain="square"), OpSpec("solve", ("square", "rhs"), domain="square"),
    OpSpec("cholesky", ("square",), domain="spd"),
    OpSpec("eigh", ("square",), domain="symmetric", part=0),
    OpSpec("svdvals", ("matrix",), domain="matrix", smooth=False),
    OpSpec("scaled_dot_product_attention", ("heads", "heads", "heads"), weight=0.5),
]}

#: leaf shapes for a new elementwise argument: rank 1 to 3, small
_SHAPES = [(3,), (4,), (2, 3), (3, 4), (4, 4), (2, 2, 3)]


@dataclass
class Stats:
    """What generation tried: programs made, and why others were discarded."""
    made: int = 0
    discarded: Counter = field(default_factory=Counter)


@dataclass
class _Draft:
    params: list = field(default_factory=list)      # [(name, shape)]
    domains: dict = field(default_factory=dict)     # leaf -> domain
    uses: dict = field(default_factory=dict)        # leaf -> [(op, attrs)] of its consumers
    nodes: list = field(default_factory=list)
    shapes: dict = field(default_factory=dict)      # value name -> shape
    helpers: int = 0                                # nodes that only make an input valid (symmetric)

    def node(self, node: Node, shape) -> str:
        """Append a helper node (not counted as one of the program's ops) and name it."""
        self.nodes.append(node)
        self.helpers += 1
        self.shapes[f"n{len(self.nodes) - 1}"] = tuple(shape)
        return f"n{len(self.nodes) - 1}"

    def leaf(self, shape, domain="any") -> str:
        name = f"x{len(self.params)}"
        self.params.append((name, tuple(shape)))
        self.domains[name] = domain
        self.shapes[name] = tuple(shape)
        return name


class Generator:
    """``program(rng)`` -> (Program, Point) or None (discarded; the reason in ``stats``).
    ``ops``: the op names to draw from (default: all of OPSET)."""

    def __init__(self, ops=None, max_ops: int = 6, extras: dict | None = None):
        extras = extras or {}
        known = {**OPSET, **{name: custom_spec(op) for name, op in extras.items()}}
        names = list(ops or known)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"not ops the fuzzer can generate: {unknown}")
        self.specs = [known[n] for n in names]
        #: the float64 forward: numpy's ops, and the user's (harness.fuzz.extra_ops)
        self.numpy = ExtendedOps(NUMPY_OPS, extras, "numpy") if extras else NUMPY_OPS
        self.weights = np.array([s.weight for s in self.specs]) / sum(s.weight for s in self.specs)
        self.max_ops = max_ops
        self.stats = Stats()

    def program(self, rng: np.random.Generator):
        draft = _Draft()
        n_ops = int(rng.integers(1, self.max_ops + 1))
        for _ in range(n_ops * 3):       # tries: an op whose slots nothing fits is drawn again
            if len(draft.nodes) - draft.helpers >= n_ops:
                break
            spec = self.specs[rng.choice(len(self.specs), p=self.weights)]
            if spec.name == "where" and len(draft.nodes) - draft.helpers + 2 > n_ops:
                continue           # where brings its condition: two nodes
            self._grow(draft, spec, rng)
        if not draft.nodes:
            self.stats.discarded["no op fits"] += 1
            return None
        program, leaves = prune(Program(tuple(draft.params), tuple(draft.nodes)))
        renamed = {leaves[k]: v for k, v in draft.domains.items() if k in leaves}
        uses = {leaves[k]: v for k, v in draft.uses.items() if k in leaves}
        point = draw_point(program, renamed, uses, rng, draft.shapes[f"n{len(draft.nodes) - 1}"])
        reason = invalid(program, point, self.numpy)
        if reason:
            self.stats.discarded[reason] += 1
            return None
        self.stats.made += 1
        return program, point

    # ---- one op --------------------------------------------------------------------------
    def _grow(self, d: _Draft, spec: OpSpec, rng) -> None:
        newest = f"n{len(d.nodes) - 1}" if d.nodes else None
        first = self._value_for(d, spec.slots[0], None, spec.domain, rng, prefer=newest)
        if first is None:
            return
        args = [first]
        attrs = spec.attrs(rng, d.shapes[first]) if spec.attrs else {}
        if attrs is None:
            return
        for slot in spec.slots[1:]:
            a = self._value_for(d, slot, d.shapes[first], "any", rng)
            if a is None:
                return
            args.append(a)
        if spec.name in SYMMETRIC_INPUT:   # they read one triangle: a symmetric input, (a + a^T) / 2
            a, shape = args[0], d.shapes[args[0]]
            transposed = d.node(Node("transpose", (a,)), shape)
            summed = d.node(Node("add", (a, transposed)), shape)
            args[0] = d.node(Node("mul", (summed, {"const": 0.5})), shape)
        if spec.name == "where":       # where(x > 0, a, b): the condition is a node of its own
            d.nodes.append(Node("greater", (args[0], {"const": 0.0})))
            d.shapes[f"n{len(d.nodes) - 1}"] = d.shapes[args[0]]
            args = [f"n{len(d.nodes) - 1}", args[1], args[2]]
        node = Node(spec.name, tuple(args), tuple(sorted(attrs.items())), spec.part)
        for a in args:
            if isinstance(a, str) and a in d.domains:
                d.uses.setdefault(a, []).append((spec.name, attrs))
        values = {n: np.full(s, 0.5) + np.eye(*s[-2:]) if len(s) >= 2 and s[-1] == s[-2] else np.full(s, 0.5)
                  for n, s in d.params}
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = evaluate(self.numpy, Program(tuple(d.params), tuple(d.nodes) + (node,)), values)
        except Exception:   # noqa: BLE001 - a shape the op refuses (a singular probe is fine)
            if not isinstance(sys.exc_info()[1], np.linalg.LinAlgError):
                return
            out = np.zeros(_linalg_shape(spec.name, [d.shapes[a] for a in args if isinstance(a, str)]))
        d.nodes.append(node)
        d.shapes[f"n{len(d.nodes) - 1}"] = np.shape(out)

    def _value_for(self, d: _Draft, slot: str, shape, domain: str, rng, prefer=None):
        """A value (existing, or a new leaf) that fits ``slot`` given arg 0's ``shape``."""
        def fits(s):
            if slot in ("x", "condition"):
                return len(s) >= 1
            if slot in ("same", "nonzero"):
                return s == shape
            if slot in ("square", "symmetric"):
                return len(s) == 2 and s[0] == s[1]
            if slot == "matrix":
                return len(s) == 2
            return False
        existing = [v for v, s in d.shapes.items() if fits(s) and not (v in d.domains and d.domains[v] != "any")]
        # chains, where gradients compound: a domain the newest value misses is found by the
        # float64 forward and the program discarded with that reason
        if slot in ("x", "condition", "square", "matrix") and prefer is not None and prefer in existing \
                and rng.random() < 0.85:
            return prefer
        if slot in ("same",) and existing and rng.random() < 0.4:
            return existing[int(rng.integers(len(existing)))]
        if slot in ("x", "condition"):
            return d.leaf(_SHAPES[int(rng.integers(len(_SHAPES)))], domain)
        if slot in ("same", "nonzero"):
            return d.leaf(shape, "nonzero" if slot == "nonzero" else "any")
        if slot == "exponent":
            return {"const": float(rng.choice([0.5, 2.0, 3.0, -1.0, 1.5]))}
        if slot in ("square", "symmetric"):
            n = int(rng.choice([2, 3, 4]))
            return d.leaf((n, n), domain if domain != "any" else "square")
        if slot == "matrix":
            return d.leaf((int(rng.choice([2, 3, 4])), int(rng.choice([2, 3, 4]))), "matrix")
        if slot == "multiplies":
            return d.leaf((shape[-1], int(rng.choice([2, 3]))), "matrix")
        if slot == "rhs":
            return d.leaf((shape[0], int(rng.choice([1, 2]))), "matrix")
        if slot == "last":
            return d.leaf((shape[-1],), "any")
        if slot == "heads":
            return d.leaf(shape if shape is not None else (1, 2, 3, 4), "any")
        return None


def custom_spec(op: dict) -> OpSpec:
    """The OpSpec of a user's op (harness.fuzz.extra_ops)."""
    return OpSpec(op["name"], tuple(op.get("slots", ("x",))), None, op.get("domain", "any"),
                  smooth=bool(op.get("smooth", True)), weight=float(op.get("weight", 1.0)))


def _linalg_shape(op: str, shapes: list) -> tuple:
    """The output shape of a linear-algebra op whose probe matrix was singular."""
    a = shapes[0]
    if op in ("det", "slogdet"):
        return a[:-2]
    if op == "solve":
        return shapes[1]
    if op == "eigh":
        return a[:-1]
    return a


def prune(program: Program) -> Program:
    """(program, leaf renaming): only the nodes the output uses and the leaves they use,
    renumbered n0.. and x0.. in order."""
    keep, need = set(), {program.output}
    for k in range(len(program.nodes) - 1, -1, -1):
        if f"n{k}" in need:
            keep.add(k)
            need.update(program.nodes[k].refs())
    rename, nodes = {}, []
    for k, node in enumerate(program.nodes):
        if k in keep:
            rename[f"n{k}"] = f"n{len(nodes)}"
            nodes.append(Node(node.op, tuple(rename.get(a, a) if isinstance(a, str) else a for a in node.args),
                              node.attrs, node.part))
    leaves = {n: f"x{i}" for i, n in enumerate(n for n, _ in program.params if n in need)}
    params = tuple((leaves[n], s) for n, s in program.params if n in leaves)
    nodes = [Node(node.op, tuple(leaves.get(a, a) if isinstance(a, str) else a for a in node.args), node.attrs,
                  node.part) for node in nodes]
    return Program(params, tuple(nodes)), leaves


# ---- points ---------------------------------------------------------------------------------
#: how a leaf is drawn, per domain: the first style is random, the others are edges
STYLES = {
    "any": ("normal", "zeros", "ties", "bounds", "large", "small"),
    "nonzero": ("normal", "large", "small"),
    "positive": ("uniform", "ties", "large", "small"),
    "above-1": ("normal", "zeros", "ties"),
    "unit": ("normal", "zeros", "ties"),
    "square": ("normal", "singular", "ties"),
    "matrix": ("normal", "singular", "ties", "zeros"),
    "symmetric": ("normal", "repeated"),
    "spd": ("normal", "repeated"),
}


def draw_point(program: Program, domains: dict, uses: dict, rng, out_shape: tuple, edge_rate: float = 0.5) -> Point:
    params, styles = {}, {}
    for name, shape in program.params:
        domain = domains.get(name, "any")
        choices = STYLES[domain]
        style = choices[0] if rng.random() >= edge_rate or len(choices) == 1 else \
            choices[1 + int(rng.integers(len(choices) - 1))]
        params[name], styles[name] = _draw(shape, domain, style, uses.get(name, []), rng), style
    return Point(params, rng.standard_normal(out_shape), styles)


def _draw(shape, domain, style, uses, rng) -> np.ndarray:
    n = shape[-1] if shape else 1
    if domain in ("spd", "symmetric"):
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        if style == "repeated":
            eig = np.array([1.0] * (n - 1) + [2.0])
        else:
            eig = rng.uniform(0.5, 2.0, n) if domain == "spd" else rng.standard_normal(n)
        return (q * eig) @ q.T
    if style == "uniform":
        return rng.uniform(0.2, 2.0, shape)
    base = rng.standard_normal(shape)
    if domain == "unit":
        base = np.clip(base, -1.2, 1.2)
    if domain == "above-1":
        base = np.maximum(base, -0.9)
    if style == "zeros":
        return np.where(rng.random(shape) < 0.3, 0.0, base)
    if style == "ties":
        pool = np.array([0.5, 2.0, 1.5]) if domain == "positive" else np.array([-1.0, 0.5, 2.0])
        return rng.choice(pool, size=shape)
    if style == "bounds":
        bounds = [v for op, attrs in uses for k, v in attrs.items() if k in ("lo", "hi", "min_val", "max_val")]
        bounds += [0.0] + ([6.0] if any(op == "relu6" for op, _ in uses) else [])
        return np.where(rng.random(shape) < 0.4, rng.choice(bounds, size=shape), base)
    if style == "large":
        return (np.abs(base) if domain == "positive" else base) * 1e3
    if style == "small":
        return (np.abs(base) + 0.1 if domain == "positive" else base) * 1e-5
    if style == "singular" and len(shape) == 2:
        base[-1] = base[0] * 2.0 if shape[0] >= 2 else 0.0
        return base
    if domain == "positive":
        return np.abs(base) + 0.2
    if domain == "nonzero":
        return np.where(np.abs(base) < 0.2, 0.2 * np.sign(base) + (base == 0) * 0.2, base)
    return base


def invalid(program: Program, point: Point, numpy=NUMPY_OPS) -> str:
    """Why the program is not worth running at the point ('' when it is): its float64 forward
    raises, is not finite, or is far beyond what float32 can hold."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = evaluate(numpy, program, point.params)
    except np.linalg.LinAlgError:
        return "linear algebra fails at the point (float64 numpy)"
    except Exception as exc:  # noqa: BLE001
        return f"numpy refuses it ({type(exc).__name__})"
    out = np.asarray(out, dtype=np.float64)
    if out.size == 0:
        return "empty output"
    if not np.isfinite(out).all():
        return "non-finite forward (float64 numpy)"
    if np.abs(out).max() > 1e30:
        return "forward beyond float32's range"
    return ""


__all__ = ["Generator", "OPSET", "OpSpec", "STYLES", "SYMMETRIC_INPUT", "Stats", "custom_spec", "draw_point", "invalid", "prune"]
