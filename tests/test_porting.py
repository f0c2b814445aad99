"""Porting mistakes the judge must name rather than pass over: a declared parameter the port's
loss never depends on (its gradient identically 0 in one framework only) is `unused-parameter`,
naming the framework, never a silent `expected 0`."""
import numpy as np
import pytest

from harness import Case
from harness.run.inprocess import installed, run_case

INSTALLED = set(installed())


def _make(rng):
    return ({"weight": rng.standard_normal((3, 4)), "bias": rng.standard_normal(3)},
            {"x": rng.standard_normal((5, 4))})


_LAYERS: dict = {}


def _torch_typo(p, i):
    """A torch module called with its parameters by name, one name mistyped: under
    functional_call(strict=False) the module's own bias is used and the declared one never is."""
    import torch

    if p["weight"].dtype not in _LAYERS:   # one module per dtype, built once, as a porter's model is
        with torch.random.fork_rng():
            torch.manual_seed(0)
            _LAYERS[p["weight"].dtype] = torch.nn.Linear(4, 3, dtype=p["weight"].dtype)
    layer = _LAYERS[p["weight"].dtype]
    out = torch.func.functional_call(layer, {"weight": p["weight"], "bais": p["bias"]}, (i["x"],), strict=False)
    return torch.sum(torch.tanh(out))


def _jax_port(p, i):
    import jax.numpy as jnp

    return jnp.sum(jnp.tanh(i["x"] @ p["weight"].T + p["bias"]))


def _torch_right(p, i):
    import torch

    return torch.sum(torch.tanh(i["x"] @ p["weight"].T + p["bias"]))


def _jax_drops_bias(p, i):
    import jax.numpy as jnp

    return jnp.sum(jnp.tanh(i["x"] @ p["weight"].T))


@pytest.mark.parametrize("native, unused_in", [({"torch": _torch_typo, "jax": _jax_port}, "torch"),
                                               ({"torch": _torch_right, "jax": _jax_drops_bias}, "jax")])
def test_a_parameter_the_port_never_uses_is_named_not_passed_over(native, unused_in):
    if not {"torch", "jax"} <= INSTALLED:
        pytest.skip("needs torch and jax")
    case = Case(name="port_unused_bias", make=_make, native=native)
    records = run_case(case, frameworks=["jax", "torch"], dtypes=("float64",))
    pair = [r for r in records if r["check"] == "pairwise" and r["param"] == "bias"]
    assert [(r["verdict"], r["cause"]) for r in pair] == [("diverge", "unused-parameter")]
    assert pair[0]["independent_in"] == unused_in
    assert f"the loss does not depend on 'bias' in {unused_in}" in pair[0]["message"]
    # each framework agrees with its own finite differences: the two compute different functions,
    # which is what the weight's gradient and the forward values show
    assert all(r["verdict"] == "pass" for r in records if r["check"] == "fd")
    others = [r for r in records if r["check"] in ("pairwise", "forward") and r["param"] != "bias"]
    assert others and {(r["verdict"], r["cause"]) for r in others} == {("diverge", "different-function")}


def test_an_autodiff_zero_where_the_function_depends_stays_an_autodiff_bug():
    """TF's determinant gradient is 0 at an exactly singular matrix while its own finite
    differences see the adjugate: the zero is an autodiff bug there, not an unused parameter."""
    if not {"tensorflow", "torch"} <= INSTALLED:
        pytest.skip("needs tensorflow and torch")
    from harness.define.loader import builtin_cases

    case = next(c for c in builtin_cases() if c.name == "op_det_singular")
    records = run_case(case, frameworks=["tensorflow", "torch"], dtypes=("float64",))
    pair = [r for r in records if r["check"] == "pairwise"]
    assert pair and all(r["cause"] == "ad-bug" for r in pair if r["verdict"] == "diverge")
    assert np.isclose(abs(pair[0]["got"] - pair[0]["expected"]), abs(pair[0]["got"]) + abs(pair[0]["expected"]))
