"""Modules as cases: a torch module and its Flax port checked with no functional wrapper,
the port's weights mapped from the torch module's, gradients compared in torch's names and
layout; a port mistake diverges, an unmappable port is one error naming what is left, and the
CLI's workers (one process per framework) reach the same records."""
import pytest

from harness import ModuleCase
from harness.run.inprocess import installed, run_case
from tests.helpers import ROOT, harness, results

INSTALLED = set(installed())
PORTS = ROOT / "tests" / "data" / "ports" / "mlp_port.py"
needs = pytest.mark.skipif(not {"torch", "jax"} <= INSTALLED, reason="needs torch and jax")


def _cases():
    from harness.define.loader import load_file

    return {c.name: c for c in load_file(str(PORTS))}


@needs
def test_a_torch_module_and_its_nnx_port_agree_in_torchs_names():
    pytest.importorskip("flax")
    records = run_case(_cases()["mlp_port"], frameworks=["torch", "jax"], dtypes=("float64",))
    pair = {r["param"]: r for r in records if r["check"] == "pairwise"}
    assert set(pair) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert {r["port_param"] for r in pair.values()} == {"a/kernel", "a/bias", "b/kernel", "b/bias"}
    assert {r["param"]: r["layer"] for r in pair.values()} == {"0.weight": "0", "0.bias": "0", "2.weight": "2",
                                                              "2.bias": "2"}
    # torch's Tanh module is a function in the port: its layer is not compared, and says why
    alone = [r for r in records if r["verdict"] == "skipped"]
    assert {(r["check"], r["layer"]) for r in alone} == {("layer_forward", "1"), ("layer_grad", "1")}
    assert all("jax has no layer for 1" in r["message"] for r in alone)
    assert all(r["verdict"] == "pass" for r in records if r not in alone), \
        [r for r in records if r["verdict"] != "pass"]
    layers = {(r["check"], r["layer"]): r for r in records if r["check"].startswith("layer_")}
    assert {k for k, r in layers.items() if r["verdict"] == "pass"} == {
        ("layer_forward", "0"), ("layer_grad", "0"), ("layer_forward", "2"), ("layer_grad", "2")}
    assert layers[("layer_forward", "0")]["port_layer"] == "a" and layers[("layer_forward", "0")]["input_agrees"]


@needs
def test_a_port_that_computes_another_function_diverges():
    pytest.importorskip("flax")
    records = run_case(_cases()["mlp_port_sin"], frameworks=["torch", "jax"], dtypes=("float64",))
    assert {r["verdict"] for r in records if r["check"] in ("pairwise", "forward")} == {"diverge"}
    assert all(r["verdict"] == "pass" for r in records if r["check"] == "fd")   # each is right about itself
    # the activation is code between two layers: the first layer on both sides after it is named,
    # with the last agreeing one before it
    first = [r for r in records if r.get("first_divergence") and r["check"] == "layer_forward"]
    assert [r["layer"] for r in first] == ["2"] and not first[0]["input_agrees"]
    assert "last agreeing output is 0's" in first[0]["message"]
    assert {r["layer"]: r["verdict"] for r in records if r["check"] == "layer_forward"} == {
        "0": "pass", "1": "skipped", "2": "diverge"}


@needs
def test_a_port_that_cannot_be_mapped_is_one_error_naming_what_is_left():
    pytest.importorskip("flax")
    from tests.data.ports.mlp_port import torch_mlp

    def short_port():
        from flax import nnx

        class One(nnx.Module):
            def __init__(self, rngs):
                self.a = nnx.Linear(3, 2, rngs=rngs)

            def __call__(self, x):
                return self.a(x)
        return One(nnx.Rngs(0))

    case = ModuleCase(name="bad_port", make=lambda rng: {"x": rng.standard_normal((4, 3))},
                      modules={"torch": torch_mlp, "jax": short_port}, loss=lambda ops, out, i: ops.sum(out))
    records = run_case(case, frameworks=["torch", "jax"], dtypes=("float64",))
    errors = [r for r in records if r["framework"] == "jax" and r["verdict"] == "error"]
    assert errors and "MappingError" in errors[0]["message"] and "0.weight" in errors[0]["message"]


@needs
def test_the_cli_builds_the_reference_module_in_its_own_process(tmp_path):
    pytest.importorskip("flax")
    out = tmp_path / "run"
    proc = harness("run", "--cases", PORTS, "--frameworks", "torch,jax", "--dtypes", "float64",
                   "--timing", "off", "--out", out, "--quiet")
    assert proc.returncode in (0, 1), proc.stderr
    rows = results(out)
    good = [r for r in rows if r["case"] == "mlp_port" and r["verdict"] != "skipped"]
    assert good and all(r["verdict"] == "pass" for r in good), [r for r in good if r["verdict"] != "pass"]
    assert {r["layer"] for r in good if r["check"] == "layer_grad"} == {"0", "2"}
    assert {r["param"] for r in good if r["check"] == "pairwise"} == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert {r["verdict"] for r in rows if r["case"] == "mlp_port_sin" and r["check"] == "pairwise"} == {"diverge"}


@needs
def test_an_equinox_port_agrees_in_torchs_names_and_a_wrong_activation_is_located():
    pytest.importorskip("equinox")
    import jax
    from tests.data.ports.mlp_port import torch_mlp

    def eqx_mlp(activation="tanh"):
        import equinox as eqx
        import jax.numpy as jnp

        class Dense(eqx.Module):   # batch-capable (eqx.nn.Linear takes one example)
            weight: jax.Array
            bias: jax.Array

            def __init__(self, n_in, n_out, key):
                self.weight = jax.random.normal(key, (n_out, n_in))
                self.bias = jnp.zeros(n_out)

            def __call__(self, x):
                return x @ self.weight.T + self.bias

        class MLP(eqx.Module):
            a: Dense
            b: Dense

            def __init__(self, key):
                ka, kb = jax.random.split(key)
                self.a, self.b = Dense(3, 5, ka), Dense(5, 2, kb)

            def __call__(self, x):
                return self.b(getattr(jnp, activation)(self.a(x)))

        return MLP(jax.random.PRNGKey(0))

    def case(name, activation, call=None):
        return ModuleCase(name=name, make=lambda rng: {"x": rng.standard_normal((4, 3))},
                          modules={"torch": torch_mlp, "jax": lambda: eqx_mlp(activation)},
                          call=None if call is None else {"jax": call},
                          loss=lambda ops, out, inputs: ops.sum(out * out))

    records = run_case(case("eqx_port", "tanh"), frameworks=["torch", "jax"], dtypes=("float64",))
    pair = {r["param"]: r for r in records if r["check"] == "pairwise"}
    # equinox keeps torch's (out, in) weight layout: the mapping is the identity, found by structure
    assert {p: r["port_param"] for p, r in pair.items()} == {
        "0.weight": "a/weight", "0.bias": "a/bias", "2.weight": "b/weight", "2.bias": "b/bias"}
    assert all(r["verdict"] in ("pass", "skipped") for r in records), [r for r in records if r["verdict"] not in
                                                                      ("pass", "skipped")]
    assert {r["layer"] for r in records if r["check"] == "layer_grad" and r["verdict"] == "pass"} == {"0", "2"}

    wrong = run_case(case("eqx_port_sin", "sin"), frameworks=["torch", "jax"], dtypes=("float64",))
    assert {r["verdict"] for r in wrong if r["check"] == "pairwise"} == {"diverge"}
    first = [r for r in wrong if r.get("first_divergence") and r["check"] == "layer_forward"]
    assert [r["layer"] for r in first] == ["2"]

    # a model called per example under jax.vmap: gradients compared, layers skipped in words
    vmapped = run_case(case("eqx_port_vmap", "tanh", lambda model, inputs: jax.vmap(model)(inputs["x"])),
                       frameworks=["torch", "jax"], dtypes=("float64",))
    assert {r["verdict"] for r in vmapped if r["check"] == "pairwise"} == {"pass"}
    refused = [r for r in vmapped if r["check"].startswith("layer_")]
    assert refused and all(r["verdict"] == "skipped" and "jax.vmap" in r["message"] for r in refused)
