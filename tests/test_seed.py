"""The seed case (nn.Linear(10, 1) + MSELoss) equals the analytic MSE gradient in every framework."""
import numpy as np
import pytest

from cases.seed import CASES
from harness.define import seeding
from harness.worker import observe
from tests.conftest import get_adapter

SEED_CASE = CASES[0]


def analytic(params, inputs):
    x, y, w, b = inputs["x"], inputs["y"], params["weight"], params["bias"]
    residual = x @ w + b - y
    n = residual.size
    return {"weight": 2 * x.T @ residual / n, "bias": 2 * residual.sum(0) / n}, float(np.mean(residual ** 2))


@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow"])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-13), ("float32", 1e-5)])
def test_seed_gradient_is_the_analytic_mse_gradient(framework, dtype, rtol):
    adapter = get_adapter(framework)
    task = {"mode": "eager", "dtype": dtype, "seed": 0, "jvp": True, "fd": dtype == "float64"}
    obs, arrays = observe.run(adapter, SEED_CASE, task)
    params, inputs, _ = SEED_CASE.build(seeding.case_rng(0, SEED_CASE.name))
    want, loss = analytic(params, inputs)
    assert obs["value"] == pytest.approx(loss, rel=rtol)
    for name in want:
        np.testing.assert_allclose(arrays[f"grad/{name}"], want[name], rtol=rtol, atol=rtol * 0.1)
    assert obs["jvp"]["tangent"] == pytest.approx(obs["jvp"]["expected"], rel=10 * rtol)
    if dtype == "float64":
        np.testing.assert_allclose(arrays["fd_estimate/weight"], want["weight"], rtol=1e-9, atol=1e-11)


def test_torch_layout_is_translated_explicitly():
    """torch.nn.Linear holds (out, in): the case declares the permutation, and the harness hands
    back the gradient in canonical (in, out) layout."""
    assert SEED_CASE.layout == {"torch": {"weight": (1, 0)}}
    w = np.arange(10.0).reshape(10, 1)
    assert SEED_CASE.to_native_layout("torch", "weight", w).shape == (1, 10)
    assert SEED_CASE.from_native_layout("torch", "weight", w.T).shape == (10, 1)
    assert SEED_CASE.to_native_layout("jax", "weight", w).shape == (10, 1)
