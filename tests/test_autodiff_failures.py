"""A transform that fails is classified, never hidden as `skipped`: the framework's own bug
(framework-error, with the upstream report), the case's custom gradient (custom-gradient), or a
transform the framework lacks (skipped, saying which); fused kernels without forward mode are
replaced by equivalent ones that have it."""
import numpy as np
import pytest

from harness import Case
from harness.define.loader import builtin_cases
from harness.run.inprocess import installed, run_case

from planted import torch_square

CASES = {c.name: c for c in builtin_cases()}


def need(fw):
    if fw not in installed():
        pytest.skip(f"{fw} not installed")


def _hvp(records, method):
    return [r for r in records if r["check"] == "hvp" and r.get("method") == method]


def test_torch_mse_loss_forward_over_reverse_is_reported_as_its_own_bug():
    """pytorch#123996: F.mse_loss's backward has no working forward-AD formula when the target
    carries no tangent (ZeroTensors are immutable); reverse-over-reverse still gives the HVP."""
    need("torch")
    records = run_case(CASES["linear_mse"], frameworks=["torch"], dtypes=("float64",))
    (bad,) = _hvp(records, "fwd-over-rev")
    assert bad["verdict"] == "error" and bad["cause"] == "framework-error"
    assert "ZeroTensors are immutable" in bad["message"] and "pytorch/pytorch#123996" in bad["upstream"]
    assert {r["verdict"] for r in _hvp(records, "rev-over-rev")} == {"pass"}


def test_a_declared_twice_differentiable_custom_gradient_that_detaches_fails():
    need("torch")
    Square = torch_square(lambda w, g: g * 2 * w.detach())      # not differentiable again

    case = Case("detached_backward", make=lambda rng: ({"w": rng.standard_normal(4)}, {}),
                native={"torch": lambda p, i: Square.apply(p["w"]).sum()}, tags=("twice-differentiable",))
    records = run_case(case, frameworks=["torch"], dtypes=("float64",))
    hvp = [r for r in records if r["check"] == "hvp"]
    assert {r["method"] for r in hvp} == {"fwd-over-rev", "rev-over-rev"}
    assert all(r["verdict"] == "error" and r["cause"] == "custom-gradient" for r in hvp), hvp
    assert any("does not require grad" in r["message"] for r in hvp)
    assert all("autograd.Function" in r["message"] and "Square" in r["message"] for r in hvp)
    # forward mode is not declared: the custom Function lacking it is a skip that says so
    (jvp,) = [r for r in records if r["check"] == "jvp"]
    assert jvp["verdict"] == "skipped" and "custom gradient" in jvp["message"]


def test_jax_custom_vjp_of_the_case_is_named_and_jax_nn_rules_are_not():
    need("jax")
    from adapters import load
    import jax

    @jax.custom_vjp
    def square(x):
        return x * x

    square.defvjp(lambda x: (x * x, x), lambda x, g: (2 * x * g,))
    a = load("jax")
    xs = [jax.numpy.ones(3)]
    assert a.custom_gradients(lambda x: square(x).sum() + jax.nn.relu(x).sum(), xs) == ["jax.custom_vjp square"]
    assert a.custom_gradients(lambda x: jax.nn.relu(x).sum(), xs) == []


@pytest.mark.parametrize("name", ["transformer_encoder", "lstm_seq"])
def test_torch_forward_mode_uses_the_equivalent_kernel_and_says_so(name):
    need("torch")
    records = run_case(CASES[name], frameworks=["torch"], dtypes=("float32",))
    jvp = [r for r in records if r["check"] == "jvp" and r["dtype"] == "float32"]
    assert [r["verdict"] for r in jvp] == ["pass"]
    assert "has no forward-mode AD: recomputed with" in jvp[0]["message"]


#: singular up to rounding (row 3 = row 1 + row 2, through multipliers 1/3 and 2/3): its gradient,
#: the adjugate, exists, but TF's determinant gradient inverts the matrix (op_det_singular's
#: matrix is singular exactly, where TF returns 0 instead: an ad-bug in the expected table)
ROUNDED_SINGULAR = Case(name="det_rounded_singular", make=lambda rng: (
    {"a": np.array([[1.0, 2.0, 3.0], [2.0, 4.5, 5.0], [3.0, 6.5, 8.0]])}, {}),
    loss=lambda ops, p, i: ops.det(p["a"]), doc="det at a matrix singular up to rounding")


def test_a_gradient_the_framework_cannot_compute_at_a_valid_point_is_a_framework_error():
    """TF's determinant gradient inverts the matrix, so it raises at a singular one (whose
    gradient, the adjugate, exists)."""
    need("tensorflow")
    records = run_case(ROUNDED_SINGULAR, frameworks=["tensorflow"], dtypes=("float64",))
    (run,) = [r for r in records if r["check"] == "run"]
    assert run["verdict"] == "error" and run["cause"] == "framework-error"
    assert "not invertible" in run["message"]
