"""Standalone repro scripts (harness.fuzz.standalone): the adapter's own op code bundled as text,
the exact point embedded, and each script run as a user would run it, in a fresh interpreter
that imports only numpy and one framework. This process imports no framework."""
import ast
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from harness.fuzz.numpy_ops import NUMPY_OPS
from harness.fuzz.program import Node, Point, Program, evaluate
from harness.fuzz.standalone import SCRIPT_NAMES, bundle, script

FRAMEWORKS = ("torch", "jax", "tensorflow")
IMPORT_NAME = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}
TOL = {"atol": 1e-7, "rtol": 1e-7}


def _need(framework):
    if importlib.util.find_spec(IMPORT_NAME[framework]) is None:
        pytest.skip(f"{framework} is not installed")


def _program(*nodes, **params):
    return Program(tuple((n, tuple(s)) for n, s in params.items()),
                   tuple(Node(op, tuple(args), tuple(sorted(attrs.items()))) for op, args, attrs in nodes))


GELU = _program(("gelu", ["x0"], {"approximate": True}), ("sum", ["n0"], {"axis": 1}), x0=(2, 3))
SIN = _program(("sin", ["x0"], {}), x0=(2, 3))
MAXIMUM = _program(("maximum", ["x0", {"const": 0.25}], {}), ("mul", ["n0", "x1"], {}), x0=(3, 2), x1=(3, 2))
MATMUL = _program(("matmul", ["x0", "x1"], {}), ("logsumexp", ["n0"], {"axis": 1}), x0=(2, 3), x1=(3, 4))


def _at(program, seed=0):
    rng = np.random.default_rng(seed)
    params = {n: rng.normal(size=s) for n, s in program.params}
    return Point(params, rng.normal(size=np.shape(evaluate(NUMPY_OPS, program, params))))


def _run(tmp_path, framework, program, point, check):
    _need(framework)
    path = tmp_path / SCRIPT_NAMES[framework]
    path.write_text(script(framework, program, point, check))
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    return done.returncode, done.stdout + done.stderr


def _check(kind, dtype="float64", mode="eager", **extra):
    return {"kind": kind, "dtype": dtype, "mode": mode, "param": "*", **TOL, **extra}


# ---- run in each framework -----------------------------------------------------------------

# MAXIMUM takes a python constant, which torch.maximum and TF's maximum refuse: the adapters'
# _binary with _tensor (torch) and _like (TF) turn it into a tensor, and come along in the bundle
@pytest.mark.parametrize("framework, program", [("torch", GELU), ("jax", GELU), ("torch", MAXIMUM),
                                                ("tensorflow", MAXIMUM)], ids=["torch-gelu", "jax-gelu",
                                                                               "torch-maximum", "tensorflow-maximum"])
def test_finite_differences_agree_with_reverse_mode_on_a_smooth_program(tmp_path, framework, program):
    code, out = _run(tmp_path, framework, program, _at(program, seed=3), _check("fd", atol=1e-8, rtol=1e-6))
    assert code == 0, out
    assert "does not reproduce" in out and program.text().splitlines()[-2] in out
    assert "max |got - reference|" in out


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_reference_check_passes_with_the_true_gradient_and_fails_with_a_wrong_one(tmp_path, framework):
    point = _at(SIN, seed=1)
    true = point.weights * np.cos(point.params["x0"])   # d/dx sum(w * sin(x))
    code, out = _run(tmp_path, framework, SIN, point, _check("reference", expected={"x0": true.tolist()}))
    assert code == 0, out
    if framework != "torch":
        return   # the wrong-expected path is the framework-free driver: one framework suffices
    wrong = true.copy()
    wrong[1, 2] += 0.1
    code, out = _run(tmp_path, framework, SIN, point, _check("reference", expected={"x0": wrong.tolist()},
                                                             note="planted: x0[1, 2] off by 0.1"))
    assert code == 1, out
    assert "REPRODUCES" in out and "planted: x0[1, 2] off by 0.1" in out
    assert "at x0[1, 2]" in out and "outside: x0[1, 2]" in out
    assert "outside: x0[0, 0]" not in out


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_compiled_gradient_matches_eager(tmp_path, framework):
    code, out = _run(tmp_path, framework, MATMUL, _at(MATMUL), _check("compiled", atol=1e-10, rtol=1e-10))
    assert code == 0, out


@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow"])
def test_forward_mode_matches_reverse_mode(tmp_path, framework):
    rng = np.random.default_rng(5)
    direction = {"x0": rng.normal(size=6).tolist(), "x1": rng.normal(size=12).tolist()}
    code, out = _run(tmp_path, framework, MATMUL, _at(MATMUL),
                     _check("jvp", dtype="float32", atol=1e-4, rtol=1e-4, direction=direction))
    assert code == 0, out
    assert "jvp check, float32" in out


def test_a_forward_check_compares_the_loss_and_a_single_param_check_one_leaf(tmp_path):
    point = _at(SIN, seed=2)
    loss = float(np.sum(point.weights * np.sin(point.params["x0"])))
    code, out = _run(tmp_path, "torch", SIN, point, _check("forward", expected=loss))
    assert code == 0, out
    point = _at(MAXIMUM, seed=4)
    expected = {"x1": np.maximum(point.params["x0"], 0.25) * point.weights}
    code, out = _run(tmp_path, "torch", MAXIMUM, point, _check("pairwise", param="x1", other="jax",
                                                                expected=expected))
    assert code == 0, out
    assert "jax's gradient" in out and "x0 =" not in out


# ---- the script's text: framework-free ----------------------------------------------------

def _imported(text):
    roots = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, ast.unparse(node)
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("program", [GELU, MAXIMUM, MATMUL], ids=["gelu", "maximum", "matmul"])
def test_a_script_imports_numpy_and_its_framework_only(framework, program):
    text = script(framework, program, _at(program), _check("fd"))
    assert _imported(text) <= {"sys", "os", "traceback", "numpy", IMPORT_NAME[framework]}, _imported(text)
    assert IMPORT_NAME[framework] in _imported(text)
    assert "harness" not in _imported(text) and "adapters" not in _imported(text)
    assert "import adapters" not in text and "from adapters" not in text
    compile(text, SCRIPT_NAMES[framework], "exec")


def test_the_point_is_embedded_exactly():
    values = np.array([0.1, -0.0, 1e-310, -np.inf, np.nan, 1 / 3, 2.0 ** 60, np.nextafter(1.0, 2.0)])
    point = Point({"x0": values.reshape(2, 4)[:, :3].copy()}, values.reshape(2, 4)[:, 3].copy())
    program = _program(("sin", ["x0"], {}), ("sum", ["n0"], {"axis": 1}), x0=(2, 3))
    text = script("torch", program, point, _check("fd"))
    found = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and node.targets[0].id in ("PARAMS", "WEIGHTS"):
            found[node.targets[0].id] = eval(compile(ast.Expression(node.value), "<point>", "eval"), {"np": np})
    for got, want in ((found["PARAMS"]["x0"], point.params["x0"]), (found["WEIGHTS"], point.weights)):
        assert got.dtype == np.float64 and got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def test_the_bundle_is_the_adapters_code_for_the_ops_used():
    torch_code = bundle("torch", ["gelu", "maximum"])
    assert 'return F.gelu(x, approximate="tanh" if approximate else "none")' in torch_code
    assert "maximum = _binary(torch.maximum)" in torch_code and "def _tensor(a, like):" in torch_code
    assert "import torch.nn.functional as F" in torch_code and "def mish" not in torch_code
    # a class attribute bound to others in the class body brings them along
    jax_code = bundle("jax", ["amax"])
    assert "max = _reduction(jnp.max)" in jax_code and "amax, amin = max, min" in jax_code
    assert jax_code.index("max = _reduction") < jax_code.index("amax, amin")
    # the adapter's code calls its own class by name; Unsupported comes from adapters: a stand-in
    tf_code = bundle("tensorflow", ["std", "hardtanh"])
    assert "def var(" in tf_code and "TensorflowOps = ops" in tf_code
    assert "class Unsupported(Exception):" in tf_code
    assert tf_code.index('os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")') < tf_code.index("import tensorflow")
    assert "import keras" in tf_code and "\nimport keras" not in tf_code   # inside _keras_ops, as in the adapter
    for code in (torch_code, jax_code, tf_code):
        compile(code, "bundle", "exec")


def test_an_op_the_adapter_lacks_and_a_bad_check_are_refused():
    program = _program(("frobnicate", ["x0"], {}), x0=(2,))
    with pytest.raises(ValueError, match="frobnicate.*TorchOps"):
        script("torch", program, Point({"x0": np.zeros(2)}, np.ones(2)), _check("fd"))
    with pytest.raises(ValueError, match="kind"):
        script("torch", SIN, _at(SIN), _check("nonsense"))
    with pytest.raises(ValueError, match="expected"):
        script("torch", SIN, _at(SIN), _check("reference"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_gpu_check_where_the_framework_has_no_gpu_cannot_run_rather_than_run_on_the_cpu(tmp_path, framework):
    """A GPU finding's script names its device; where the framework sees no such GPU it exits 2
    (the check cannot run). Never 1 (a crash read as "reproduces"), never a silent CPU fallback
    (TensorFlow's soft placement) that would report the CPU's result as the GPU's."""
    _need(framework)
    text = script(framework, SIN, _at(SIN), _check("fd", device="cuda:3"))
    assert "DEVICE_NAME = 'cuda:3'" in text and "DEVICE_INDEX = 3" in text and "float64, eager, cuda:3)" in text
    code, out = _run(tmp_path, framework, SIN, _at(SIN), _check("fd", device="cuda:3"))
    if code != 2 and _count_in_subprocess(framework) > 3:
        pytest.skip("this machine has a fourth GPU")
    assert code == 2, out
    assert "cuda:3 is not available here" in out and "the check could not run (exit 2)" in out
    assert "REPRODUCES" not in out


def _count_in_subprocess(framework):
    probe = {"torch": "import torch; print(torch.cuda.device_count())",
             "jax": "import jax; print(len([d for d in jax.devices() if d.platform == 'gpu']))",
             "tensorflow": "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"}
    done = subprocess.run([sys.executable, "-c", probe[framework]], capture_output=True, text=True, timeout=120)
    return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0


def test_a_check_device_is_cpu_cuda_or_cuda_n():
    assert "DEVICE_NAME = 'cuda:0'" in script("torch", SIN, _at(SIN), _check("fd", device="cuda"))
    with pytest.raises(ValueError, match="device 'tpu'"):
        script("torch", SIN, _at(SIN), _check("fd", device="tpu"))
    with pytest.raises(ValueError, match="precision 'high'"):
        script("torch", SIN, _at(SIN), _check("fd", precision="high"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_highest_precision_check_sets_full_float32_in_its_script(tmp_path, framework):
    """A divergence under --precision highest is reproduced under full float32, as the worker ran
    it (TF32 and bf16 passes off); the script still runs where there is no GPU to use them."""
    code, out = _run(tmp_path, framework, MATMUL, _at(MATMUL),
                     _check("compiled", atol=1e-10, rtol=1e-10, precision="highest"))
    assert code == 0, out
    text = (tmp_path / SCRIPT_NAMES[framework]).read_text()
    assert "PRECISION = 'highest'" in text and "full float32 (--precision highest)" in text
