"""Standalone repro scripts: one finding of one program as a Python file that imports only numpy
and one framework, embeds the exact point, recomputes the checked quantity and exits 1 when the
divergence reproduces (0 when it does not, 2 when the check could not run).

Fidelity: the ops in a script are the adapter's own code, not a re-implementation, so what
reproduces in the script is what the harness ran. ``harness/`` never imports a framework, so the
adapter module is read as text and its code extracted with ``ast`` (``bundle``): the Ops class's
statements for the ops the program uses, the module-level helpers and imports they reach, and the
module's top-level side effects (TensorFlow's log level). The differentiation around them is a
few lines per framework (``_FRAMEWORKS``), written after each adapter's transforms.
"""
from __future__ import annotations

import ast
import keyword
import math
import re
import textwrap
from pathlib import Path

import numpy as np

import adapters
from harness.fuzz.program import Point, Program

SCRIPT_NAMES = {"torch": "repro_torch.py", "jax": "repro_jax.py", "tensorflow": "repro_tensorflow.py"}
#: what a check compares (see ``script``)
KINDS = ("fd", "jvp", "compiled", "reference", "pairwise", "forward")
DTYPES = ("float64", "float32", "bfloat16", "float16")
MODES = ("eager", "compiled")

# ---- the bundler: the adapter's own op code, as text ---------------------------------------


def _adapter_path(framework: str) -> tuple[Path, str]:
    """The adapter's source file and its Ops class's name (the registry's adapter class with
    ``Adapter`` replaced by ``Ops``, or else the one class deriving from ``Ops``)."""
    if framework not in adapters.FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r} (known: {', '.join(adapters.FRAMEWORKS)})")
    module, cls = adapters.FRAMEWORKS[framework].adapter.split(":")
    return Path(adapters.__file__).parent / f"{module.rsplit('.', 1)[-1]}.py", cls.replace("Adapter", "Ops")


def _bound_by_import(alias: ast.alias) -> str:
    return alias.asname or alias.name.split(".")[0]


def _targets(stmt) -> set:
    """Names a statement binds in its scope."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {_bound_by_import(a) for a in stmt.names}
    targets = stmt.targets if isinstance(stmt, ast.Assign) else \
        [stmt.target] if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) else []
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _locals(fn) -> set:
    """Names local to a function or lambda: its parameters and whatever its body binds."""
    a = fn.args
    names = {p.arg for p in a.posonlyargs + a.args + a.kwonlyargs}
    names |= {p.arg for p in (a.vararg, a.kwarg) if p is not None}
    for node in ast.walk(ast.Module(body=fn.body if isinstance(fn.body, list) else [], type_ignores=[])):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {_bound_by_import(x) for x in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def _references(stmt, class_name: str) -> tuple[list, set]:
    """([(free name, inside a function or lambda)], {attributes read off ``class_name``}).
    The flag matters in a class body: only names outside nested functions see the class scope."""
    free, attrs = [], set()

    def visit(node, bound, nested):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in bound:
                free.append((node.id, nested))
            return
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == class_name \
                and class_name not in bound:
            attrs.add(node.attr)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
            for child in defaults + getattr(node, "decorator_list", []):
                visit(child, bound, nested)
            inner = bound | _locals(node)
            for child in node.body if isinstance(node.body, list) else [node.body]:
                visit(child, inner, True)
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner = bound | {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
            for child in ast.iter_child_nodes(node):
                visit(child, inner, True)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, bound, nested)

    visit(stmt, frozenset(), False)
    return free, attrs


def _segment(lines: list, stmt) -> str:
    """A statement's source, decorators and a trailing comment included, dedented."""
    first = min([d.lineno for d in getattr(stmt, "decorator_list", [])] + [stmt.lineno])
    tail = lines[stmt.end_lineno - 1][stmt.end_col_offset:]
    text = "\n".join(lines[first - 1:stmt.end_lineno - 1] + [lines[stmt.end_lineno - 1][:stmt.end_col_offset]])
    if tail.strip().startswith("#"):
        text += tail.rstrip()
    return textwrap.dedent(text)


def _is_project_import(stmt) -> bool:
    if not isinstance(stmt, ast.ImportFrom):
        return False
    return bool(stmt.level) or (stmt.module or "").split(".")[0] in ("adapters", "harness", "cases", "__future__")


def _bundle(framework: str, op_names, uses=()) -> tuple[str, str]:
    """(imports and top-level side effects, definitions and the ``ops`` class) for ``op_names``
    plus the module-level names ``uses``."""
    path, class_name = _adapter_path(framework)
    source = path.read_text()
    lines = source.splitlines()
    body = ast.parse(source).body
    found = [s for s in body if isinstance(s, ast.ClassDef) and s.name == class_name]
    if not found:
        raise ValueError(f"{path.name} defines no class {class_name}")
    members = found[0].body

    module_binds, class_binds = {}, {}
    for i, stmt in enumerate(body):
        for name in _targets(stmt):
            module_binds.setdefault(name, []).append(i)
    for i, stmt in enumerate(members):
        for name in _targets(stmt):
            class_binds.setdefault(name, []).append(i)

    want_module, want_class, aliases, stand_ins = set(), set(), {}, {}
    state = {"self_named": False}
    todo = []

    def need_member(name, before=None):
        idx = [i for i in class_binds.get(name, []) if before is None or i < before]
        if not idx:
            return False
        if idx[-1] not in want_class:
            want_class.add(idx[-1])
            todo.append(("class", idx[-1]))
        return True

    def need_global(name):
        if name == class_name:
            state["self_named"] = True
            return True
        for i in module_binds.get(name, []):
            stmt = body[i]
            if _is_project_import(stmt):
                stand_ins[name] = "." * stmt.level + (stmt.module or "")
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                aliases.setdefault(i, set()).add(name)
            elif i not in want_module:
                want_module.add(i)
                todo.append(("module", i))
        return name in module_binds

    for name in dict.fromkeys(op_names):
        if not need_member(name):
            raise ValueError(f"op {name!r} is not defined by {class_name} in adapters/{path.name}")
    for name in uses:
        if not need_global(name):
            raise ValueError(f"adapters/{path.name} binds no module-level name {name!r}")
    # top-level statements run for their effect (not the docstring): TensorFlow's log level
    for i, stmt in enumerate(body):
        if isinstance(stmt, ast.Expr) and not (i == 0 and isinstance(stmt.value, ast.Constant)):
            want_module.add(i)
            todo.append(("module", i))

    while todo:
        where, i = todo.pop()
        stmt = members[i] if where == "class" else body[i]
        if where == "class" and isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and not any(
                isinstance(d, ast.Name) and d.id in ("staticmethod", "classmethod") for d in stmt.decorator_list):
            raise ValueError(f"{class_name}.{stmt.name} is a plain method: only staticmethods and class "
                             "attributes can be bundled")
        free, attrs = _references(stmt, class_name)
        for name in attrs:
            state["self_named"] = True
            need_member(name)
        for name, nested in free:
            if where == "class" and not nested and need_member(name, before=i):
                continue
            need_global(name)

    preamble, definitions = [], []
    for i, stmt in enumerate(body):
        if i in aliases:
            names = [a for a in stmt.names if _bound_by_import(a) in aliases[i]]
            text = _segment(lines, stmt) if len(names) == len(stmt.names) else \
                ast.unparse(type(stmt)(**{**stmt.__dict__, "names": names}))
            preamble.append(text)
        elif i in want_module:
            (preamble if isinstance(stmt, ast.Expr) else definitions).append(_segment(lines, stmt))
    for name, module in sorted(stand_ins.items()):
        definitions.insert(0, f"class {name}(Exception):\n    \"\"\"Stand-in for the adapter's {name} "
                              f"(from {module}): this script imports no project module.\"\"\"")
    cls = [f"class ops:\n    \"\"\"{class_name}'s code for the ops this program uses "
           f"(adapters/{path.name}).\"\"\""]
    cls += [textwrap.indent(_segment(lines, members[i]), "    ") for i in sorted(want_class)]
    definitions.append("\n\n".join(cls))
    if state["self_named"]:
        definitions.append(f"{class_name} = ops  # the adapter's code refers to its class by name")
    return "\n".join(preamble), "\n\n\n".join(definitions)


def bundle(framework: str, op_names, uses=()) -> str:
    """The adapter's own code for ``op_names`` as script text: the imports and module-level
    definitions they reach, then ``class ops`` with the Ops class's statements for them."""
    preamble, definitions = _bundle(framework, op_names, uses)
    return preamble + "\n\n\n" + definitions + "\n"


# ---- the differentiation around them, after each adapter's transforms ----------------------

_FRAMEWORKS = {
    # uses: module-level names of the adapter the snippet needs; setup: right after the imports
    "torch": {"uses": ("torch", "_DTYPES", "_full_float32"), "setup": "", "version": "torch.__version__", "code": '''
DEVICE = torch.device(DEVICE_NAME)
if PRECISION == "highest":   # as `harness run --precision highest` (the adapter's own function, above)
    _full_float32()
if DEVICE_KIND == "cuda" and torch.cuda.device_count() <= DEVICE_INDEX:
    no_device(f"torch sees {torch.cuda.device_count()} CUDA device(s)")


def native(a, dtype):
    a = np.asarray(a)
    return torch.from_numpy(np.ascontiguousarray(a).reshape(a.shape)).to(_DTYPES[dtype]).to(DEVICE)


def to_numpy(t):
    t = t.detach()
    return (t.to(torch.float64) if t.is_floating_point() else t).cpu().numpy()


def maybe_compile(f, compiled):
    return torch.compile(f, dynamic=False) if compiled else f


def forward(f, xs, compiled):
    with torch.no_grad():
        return maybe_compile(f, compiled)(*xs)


def gradient(f, xs, compiled):
    leaves = [x.detach().requires_grad_(True) for x in xs]
    y = maybe_compile(f, compiled)(*leaves)
    grads = torch.autograd.grad(y.reshape(()), leaves, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves)]


def jvp(f, xs, vs, compiled):
    return torch.func.jvp(maybe_compile(f, compiled), tuple(xs), tuple(vs))[1]
'''},
    "jax": {"uses": ("jax", "jnp", "_DTYPES"), "version": "jax.__version__",
            "setup": 'jax.config.update("jax_enable_x64", True)', "code": '''
try:
    DEVICE = jax.devices("gpu")[DEVICE_INDEX] if DEVICE_KIND == "cuda" else jax.devices("cpu")[0]
except Exception as exc:  # no GPU backend (RuntimeError, or an assert in a CPU-only jaxlib)
    no_device(f"{type(exc).__name__}: {exc}")
jax.config.update("jax_default_device", DEVICE)
if PRECISION == "highest":   # as `harness run --precision highest`: no TF32 or bf16 passes in float32 dots
    jax.config.update("jax_default_matmul_precision", "highest")


def native(a, dtype):
    return jax.device_put(np.asarray(a).astype(_DTYPES[dtype]), DEVICE)


def to_numpy(t):
    return np.asarray(t).astype(np.float64)


def maybe_jit(fn, compiled):
    return jax.jit(fn) if compiled else fn


def forward(f, xs, compiled):
    return maybe_jit(f, compiled)(*xs)


def gradient(f, xs, compiled):
    # one tuple argument (one pytree), as the adapter's grad_fn
    vg = jax.value_and_grad(lambda xs: jnp.reshape(f(*xs), ()))
    return list(maybe_jit(vg, compiled)(tuple(xs))[1])


def jvp(f, xs, vs, compiled):
    return maybe_jit(lambda xs, vs: jax.jvp(f, xs, vs), compiled)(tuple(xs), tuple(vs))[1]
'''},
    "tensorflow": {"uses": ("tf", "_DTYPES"), "setup": "", "version": "tf.__version__", "code": '''
DEVICE = f"/GPU:{DEVICE_INDEX}" if DEVICE_KIND == "cuda" else "/CPU:0"
# soft placement would run a missing GPU's ops on the CPU and report that as the GPU's result
if DEVICE_KIND == "cuda" and len(tf.config.list_physical_devices("GPU")) <= DEVICE_INDEX:
    no_device(f"tensorflow sees {len(tf.config.list_physical_devices('GPU'))} GPU(s)")
if PRECISION == "highest":   # as `harness run --precision highest`
    tf.config.experimental.enable_tensor_float_32_execution(False)
ZERO = tf.UnconnectedGradients.ZERO


def native(a, dtype):
    with tf.device(DEVICE):
        return tf.cast(tf.constant(np.asarray(a)), _DTYPES[dtype])


def to_numpy(t):
    return tf.cast(t, tf.float64).numpy()


def placed(fn, compiled):
    """fn under DEVICE; compiled: one XLA graph of the whole callable."""
    def run(*args):
        with tf.device(DEVICE):
            return fn(*args)
    return tf.function(run, jit_compile=True) if compiled else run


def forward(f, xs, compiled):
    return placed(f, compiled)(*xs)


def gradient(f, xs, compiled):
    def grads(*xs):
        xs = list(xs)
        with tf.GradientTape() as tape:
            tape.watch(xs)
            y = f(*xs)
        return tuple(tape.gradient(y, xs, unconnected_gradients=ZERO))
    return list(placed(grads, compiled)(*xs))


def jvp(f, xs, vs, compiled):
    def forward_mode(xs, vs):
        with tf.autodiff.ForwardAccumulator(primals=list(xs), tangents=list(vs)) as acc:
            y = f(*xs)
        return acc.jvp(y, unconnected_gradients=ZERO)
    return placed(forward_mode, compiled)(list(xs), list(vs))
'''},
}

#: per kind: (how got is computed, how the reference is, label of got, label of the reference)
_KINDS = {
    "fd": ("gradients(DTYPE, COMPILED)", "finite_differences()", "reverse-mode gradient at {dtype}, {mode}",
           "central finite differences of the float64 eager loss (Richardson)"),
    "jvp": ("{'jvp': directional(DTYPE, COMPILED)}",
            "{'jvp': sum(float(np.sum(g * DIRECTION[n])) for n, g in gradients(DTYPE, COMPILED, PARAMS).items())}",
            "forward-mode JVP along DIRECTION at {dtype}, {mode}",
            "<reverse-mode gradient, DIRECTION> at {dtype}, {mode}"),
    "compiled": ("gradients(DTYPE, True)", "gradients(DTYPE, False)", "compiled gradient at {dtype}",
                 "eager gradient at {dtype}"),
    "reference": ("gradients(DTYPE, COMPILED)", "EXPECTED", "gradient at {dtype}, {mode}",
                  "the float64 reference gradient (embedded)"),
    "pairwise": ("gradients(DTYPE, COMPILED)", "EXPECTED", "gradient at {dtype}, {mode}",
                 "{other}'s gradient (embedded)"),
    "forward": ("{'loss': loss_value(DTYPE, COMPILED)}", "{'loss': EXPECTED}", "loss at {dtype}, {mode}",
                "the reference loss (embedded)"),
}

_DRIVER = '''
def loss_fn(dtype):
    """The harness's loss, sum(w * program(...)), of the leaves; the weights at dtype."""
    w = native(WEIGHTS, dtype)

    def f(*xs):
        return ops.sum(ops.mul(program(*xs), w))
    return f


def leaves(dtype, values=PARAMS):
    return [native(values[n], dtype) for n in PARAMS]


def gradients(dtype, compiled, names=COMPARED):
    grads = gradient(loss_fn(dtype), leaves(dtype), compiled)
    return {n: to_numpy(g) for n, g in zip(PARAMS, grads) if n in names}


def loss_value(dtype, compiled):
    return float(to_numpy(forward(loss_fn(dtype), leaves(dtype), compiled)))


def directional(dtype, compiled):
    tangents = [native(DIRECTION[n], dtype) for n in PARAMS]
    return float(to_numpy(jvp(loss_fn(dtype), leaves(dtype), tangents, compiled)))


def finite_differences():
    """Central differences of the float64 eager loss per element, Richardson-extrapolated:
    (4 D(h/2) - D(h)) / 3 with h = 1e-3 * max(1, |x|)."""
    f = loss_fn("float64")

    def loss_at(name, index, step):
        values = dict(PARAMS, **{name: PARAMS[name].copy()})
        values[name][index] += step
        return float(to_numpy(forward(f, leaves("float64", values), False)))

    out = {}
    for name in COMPARED:
        g = np.zeros_like(PARAMS[name])
        for index in np.ndindex(g.shape):
            h = 1e-3 * max(1.0, abs(float(PARAMS[name][index])))
            d = [(loss_at(name, index, s) - loss_at(name, index, -s)) / (2 * s) for s in (h, h / 2)]
            g[index] = (4 * d[1] - d[0]) / 3
        out[name] = g
    return out


def show(value):
    a = np.asarray(value, np.float64)
    return repr(float(a)) if a.ndim == 0 else repr(a)


def label(name, index):
    return name + (f"[{', '.join(map(str, index))}]" if index else "")


def compare(got, reference):
    """(elements outside the tolerance, largest |got - reference|): NaN-equal elements and equal
    infinities agree; a non-finite value against anything else disagrees."""
    bad, worst = [], (-1.0, "", None, None)
    for name in reference:
        g, r = np.asarray(got[name], np.float64), np.asarray(reference[name], np.float64)
        if g.shape != r.shape:
            print(f"{name}: got shape {g.shape}, reference shape {r.shape}")
            bad.append((name, np.nan, np.nan, np.inf))
            continue
        same = (np.isnan(g) & np.isnan(r)) | (g == r)
        with np.errstate(invalid="ignore"):
            diff = np.where(same, 0.0, np.abs(g - r))
        diff = np.where(np.isnan(diff), np.inf, diff)
        outside = ~same & ((diff > ATOL + RTOL * np.abs(r)) | ~np.isfinite(g) | ~np.isfinite(r))
        for index in np.ndindex(g.shape):
            row = (label(name, index), float(g[index]), float(r[index]), float(diff[index]))
            if outside[index]:
                bad.append(row)
            if row[3] > worst[0]:
                worst = (row[3], row[0], row[1], row[2])
    return bad, worst


def main():
    if NOTE:
        print(NOTE)
    print(PROGRAM)
    print(f"{FRAMEWORK} {VERSION}: {KIND} check, {DTYPE}, {MODE}, on {DEVICE_NAME}")
    got, reference = measure()
    np.set_printoptions(floatmode="unique", linewidth=120)
    print(f"got ({GOT_LABEL}):")
    for name in reference:
        print(f"  {name} = {show(got[name])}")
    print(f"reference ({REFERENCE_LABEL}):")
    for name in reference:
        print(f"  {name} = {show(reference[name])}")
    bad, (diff, where, g, r) = compare(got, reference)
    print(f"max |got - reference| = {diff!r} at {where} (got {g!r}, reference {r!r})")
    print(f"tolerance: |got - reference| <= atol {ATOL!r} + rtol {RTOL!r} * |reference|")
    for where, g, r, diff in sorted(bad, key=lambda row: -row[3])[:10]:
        print(f"  outside: {where}: got {g!r}, reference {r!r}, |diff| {diff!r}")
    if len(bad) > 10:
        print(f"  ... {len(bad)} elements outside in all")
    print("REPRODUCES" if bad else "does not reproduce")
    return bool(bad)


if __name__ == "__main__":
    try:
        reproduces = main()
    except Exception:
        traceback.print_exc()
        print("the check could not run (exit 2)")
        sys.exit(2)
    sys.exit(1 if reproduces else 0)
'''


# ---- literals ----------------------------------------------------------------------------

def _float(v: float) -> str:
    """repr round-trips a python float exactly; the non-finite ones as numpy's names."""
    v = float(v)
    if math.isnan(v):
        return "np.nan"
    return repr(v) if math.isfinite(v) else ("np.inf" if v > 0 else "-np.inf")


def _array(a, indent: str = "    ") -> str:
    a = np.asarray(a, dtype=np.float64)
    values = [_float(v) for v in a.reshape(-1)]
    rows = [", ".join(values[k:k + 6]) for k in range(0, len(values), 6)] or [""]
    body = rows[0] if len(rows) == 1 else "\n" + ",\n".join(indent + "    " + r for r in rows) + ",\n" + indent
    return f"np.array([{body}], dtype=np.float64).reshape({tuple(a.shape)!r})"


def _literal(v) -> str:
    """A JSON value (a const or an attribute) as python source, floats exactly."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {_literal(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _program_code(program: Program) -> str:
    """``def program(x0, ...)``: one line per node, as harness.fuzz.program.evaluate calls them."""
    node_names = {f"n{k}" for k in range(len(program.nodes))}
    taken = {"ops", "np", "w"} | node_names
    names = {}
    for i, (leaf, _) in enumerate(program.params):
        ok = leaf.isidentifier() and not keyword.iskeyword(leaf) and leaf not in taken
        names[leaf] = leaf if ok else f"leaf{i}"
        taken.add(names[leaf])
    lines = [f"def program({', '.join(names.values())}):"]
    for k, node in enumerate(program.nodes):
        args = [names.get(a, a) if isinstance(a, str) else _literal(a["const"]) for a in node.args]
        plain = [(key, v) for key, v in node.attrs if key.isidentifier() and not keyword.iskeyword(key)]
        args += [f"{key}={_literal(v)}" for key, v in plain]
        other = {key: v for key, v in node.attrs if (key, v) not in plain}
        if other:
            args.append(f"**{_literal(other)}")
        part = "" if node.part is None else f"[{node.part}]"
        lines.append(f"    n{k} = ops.{node.op}({', '.join(args)}){part}")
    lines.append(f"    return {program.output}")
    return "\n".join(lines)


def _leaf_dict(values: dict, order) -> str:
    return "{\n" + "".join(f"    {n!r}: {_array(values[n])},\n" for n in order) + "}"


def _check(program: Program, check: dict) -> dict:
    """The check with its defaults, validated; embedded arrays reshaped to the leaves' shapes."""
    shapes = program.shapes()
    c = {"mode": "eager", "param": "*", "note": "", "device": "cpu", "precision": "default", **check}
    if c.get("kind") not in KINDS:
        raise ValueError(f"check kind {c.get('kind')!r} is not one of {', '.join(KINDS)}")
    if c.get("dtype") not in DTYPES:
        raise ValueError(f"check dtype {c.get('dtype')!r} is not one of {', '.join(DTYPES)}")
    if c["mode"] not in MODES:
        raise ValueError(f"check mode {c['mode']!r} is not one of {', '.join(MODES)}")
    if c["param"] != "*" and c["param"] not in shapes:
        raise ValueError(f"check param {c['param']!r} is not a leaf of the program ({', '.join(shapes)})")
    for key in ("atol", "rtol"):
        if not isinstance(c.get(key), (int, float)) or isinstance(c.get(key), bool):
            raise ValueError(f"check {key} must be a number, not {c.get(key)!r}")
    c["compared"] = list(shapes) if c["param"] == "*" else [c["param"]]
    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(c["device"])):
        raise ValueError(f"check device {c['device']!r} is not cpu, cuda or cuda:N")
    c["device"] = "cuda:0" if c["device"] == "cuda" else c["device"]
    if c["precision"] not in ("default", "highest"):
        raise ValueError(f"check precision {c['precision']!r} is not default or highest")

    def leaf_arrays(values, what, fill=None):
        values = values if isinstance(values, dict) else {c["param"]: values}
        out = {}
        for name in (shapes if fill is not None else c["compared"]):
            if name not in values and fill is None:
                raise ValueError(f"check {what} has no value for leaf {name!r}")
            a = np.asarray(values.get(name, np.full(shapes[name], fill)), dtype=np.float64)
            if a.size != int(np.prod(shapes[name], dtype=int)):
                raise ValueError(f"check {what} for {name!r} has {a.size} elements, the leaf's shape is {shapes[name]}")
            out[name] = a.reshape(shapes[name])
        return out

    if c["kind"] == "jvp":
        if "direction" not in c:
            raise ValueError("a jvp check needs a direction (leaf -> values)")
        c["direction"] = leaf_arrays(c["direction"], "direction", fill=0.0)
    if c["kind"] in ("reference", "pairwise"):
        if "expected" not in c:
            raise ValueError(f"a {c['kind']} check needs expected (leaf -> gradient)")
        c["expected"] = leaf_arrays(c["expected"], "expected")
    if c["kind"] == "forward":
        if not isinstance(c.get("expected"), (int, float)):
            raise ValueError(f"a forward check needs expected, the loss as a number, not {c.get('expected')!r}")
        c["expected"] = float(c["expected"])
    if c["kind"] == "pairwise" and not c.get("other"):
        raise ValueError("a pairwise check names the other framework (other)")
    return c


def _custom_ops(program: Program, extra_ops: str | None) -> set:
    """The program's ops that the user's file defines."""
    from harness.fuzz.extra_ops import load   # noqa: PLC0415 - only programs with a user's ops need it

    return set(program.ops()) & set(load(extra_ops)) if extra_ops else set()


def _docstring(text: str) -> str:
    return '"""' + text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') + '\n"""'


def _extra_ops_code(framework: str, names: list, path: str) -> str:
    """The user's ops (harness.fuzz.extra_ops) the program uses, imported from their file."""
    return (f"#: the program's own ops, from the file `harness fuzz --extra-ops` was given\n"
            f"EXTRA_OPS_FILE = {path!r}\n"
            "import importlib.util as _importlib_util\n"
            "_spec = _importlib_util.spec_from_file_location('fuzz_extra_ops', EXTRA_OPS_FILE)\n"
            "_extra = _importlib_util.module_from_spec(_spec)\n"
            "_spec.loader.exec_module(_extra)\n"
            "for _op in _extra.FUZZ_OPS:\n"
            f"    if _op['name'] in {sorted(names)!r}:\n"
            f"        setattr(ops, _op['name'], staticmethod(_op[{framework!r}]))")


def script(framework: str, program: Program, point: Point, check: dict, extra_ops: str | None = None) -> str:
    """A standalone script that reproduces (exit 1) or not (exit 0) one check of ``program`` at
    ``point`` in ``framework``; exit 2 where the check cannot run. ``check``: kind (KINDS), dtype,
    mode, param (a leaf or "*"), atol, rtol; direction (jvp), expected (reference, pairwise,
    forward), other (pairwise), note, device ("cpu", "cuda" (cuda:0) or "cuda:N", default cpu),
    precision ("default": the framework's float32 policy, or "highest": full float32)."""
    if framework not in _FRAMEWORKS:
        raise ValueError(f"no standalone scripts for {framework!r} (known: {', '.join(_FRAMEWORKS)})")
    spec, c = _FRAMEWORKS[framework], _check(program, check)
    params = {}
    for name, shape in program.params:
        if name not in point.params:
            raise ValueError(f"the point has no value for leaf {name!r}")
        params[name] = np.asarray(point.params[name], dtype=np.float64)
        if params[name].shape != tuple(shape):
            raise ValueError(f"the point's {name!r} has shape {params[name].shape}, the leaf's is {tuple(shape)}")
    custom = sorted(_custom_ops(program, extra_ops))
    preamble, definitions = _bundle(framework, [o for o in program.ops() if o not in custom] + ["sum", "mul"],
                                    spec["uses"])
    if custom:
        definitions += "\n\n\n" + _extra_ops_code(framework, custom, extra_ops)
    preamble = "\n".join(line for line in preamble.splitlines() if line.strip() != "import numpy as np")
    got_code, ref_code, got_label, ref_label = _KINDS[c["kind"]]
    fill = {"dtype": c["dtype"], "mode": c["mode"], "other": c.get("other", "")}
    exit_line = "exit 1 when the divergence reproduces, 0 when it does not, 2 when the check cannot run."
    header = (f"Standalone repro: {c['kind']} check of a generated program in {framework} "
              f"({c['dtype']}, {c['mode']}, {c['device']}"
              + (", full float32 (--precision highest)" if c["precision"] == "highest" else "") + f").\n{exit_line}\n"
              + (f"\n{c['note']}\n" if c["note"] else "")
              + "\n" + textwrap.indent(program.text(), "    ") + "\n\n"
              f"got: {got_label.format(**fill)}\nreference: {ref_label.format(**fill)}\n"
              f"tolerance: atol {c['atol']!r} + rtol {c['rtol']!r} * |reference|"
              + (f" on leaf {c['param']}" if c["param"] != "*" else ""))
    constants = [
        f"FRAMEWORK = {framework!r}", f"VERSION = {spec['version']}", f"KIND = {c['kind']!r}",
        f"DTYPE = {c['dtype']!r}", f"MODE = {c['mode']!r}", f"COMPILED = {c['mode'] == 'compiled'!r}",
        f"DEVICE_NAME = {c['device']!r}", f"DEVICE_KIND = {c['device'].split(':')[0]!r}",
        f"DEVICE_INDEX = {int(c['device'].split(':')[1]) if ':' in c['device'] else 0}",
        f"PRECISION = {c['precision']!r}", f"ATOL = {_literal(float(c['atol']))}",
        f"RTOL = {_literal(float(c['rtol']))}", f"COMPARED = {c['compared']!r}",
        f"NOTE = {c['note']!r}", f"PROGRAM = {program.text()!r}",
        f"GOT_LABEL = {got_label.format(**fill)!r}", f"REFERENCE_LABEL = {ref_label.format(**fill)!r}",
        "#: the exact point, float64 (repr round-trips every value)",
        f"PARAMS = {_leaf_dict(params, program.shapes())}",
        f"WEIGHTS = {_array(point.weights, indent='')}",
    ]
    if c["kind"] == "jvp":
        constants.append(f"DIRECTION = {_leaf_dict(c['direction'], program.shapes())}")
    if c["kind"] in ("reference", "pairwise"):
        constants.append(f"EXPECTED = {_leaf_dict(c['expected'], c['compared'])}")
    if c["kind"] == "forward":
        constants.append(f"EXPECTED = {_literal(c['expected'])}")
    guard = ('def no_device(why):\n    """The check\'s device is not on this machine: it cannot run here (exit 2)."""\n'
             '    print(f"{FRAMEWORK}: {DEVICE_NAME} is not available here ({why})")\n'
             '    print("the check could not run (exit 2)")\n    sys.exit(2)')
    measure = f'def measure():\n    """(got, reference) of the check."""\n    return {got_code}, {ref_code}'
    parts = [_docstring(header), "import sys\nimport traceback\n\nimport numpy as np\n" + preamble,
             spec["setup"], "\n".join(constants), _program_code(program), definitions, guard, spec["code"].strip(),
             measure, _DRIVER.strip()]
    text = "\n\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"
    return re.sub(r"\n{4,}", "\n\n\n", text)


__all__ = ["DTYPES", "KINDS", "MODES", "SCRIPT_NAMES", "bundle", "script"]
