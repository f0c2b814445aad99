"""The built-in porting cases (cases/models_porting.py): real model definitions and their ports,
checked as modules. A correct port agrees everywhere; each planted port mistake diverges exactly
as the expected table declares and is located by the layer records at the layer that holds it."""
import pytest

from cases import expected
from cases.models_porting import GPT_MISTAKE_LAYERS
from harness.define.loader import builtin_cases
from harness.run.inprocess import installed, run_case

CASES = {c.name: c for c in builtin_cases() if "porting" in c.tags}
ENTRIES = expected.load()
INSTALLED = set(installed())


def _needs(*frameworks):
    missing = set(frameworks) - INSTALLED
    if missing:
        pytest.skip(f"needs {', '.join(sorted(missing))}")
    if "jax" in frameworks:
        pytest.importorskip("flax")


def _first(records, check="layer_forward"):
    return [r for r in records if r.get("first_divergence") and r["check"] == check]


def test_porting_cases_are_tagged_and_planted_ones_are_declared():
    planted = {n for n, c in CASES.items() if "planted" in c.tags}
    assert planted == {f"gpt_port_{m}" for m in GPT_MISTAKE_LAYERS}
    declared = {e.case for e in ENTRIES}
    assert planted <= declared
    assert all("model" in c.tags for c in CASES.values())


def test_the_nnx_port_of_nanogpt_agrees_with_torch_in_every_layer_and_gradient():
    _needs("torch", "jax")
    records = run_case(CASES["gpt_port"], frameworks=["torch", "jax"], dtypes=("float64", "float32"))
    failing = [r for r in records if r["verdict"] not in ("pass", "skipped")]
    assert not failing, failing[:3]
    pairwise = [r for r in records if r["check"] == "pairwise" and r["dtype"] == "float64"]
    assert len(pairwise) == 28 and {r["port_param"] for r in pairwise if r["param"] == "transformer.wte.weight"} == \
        {"wte/embedding"}
    assert {r["port_rule"] for r in pairwise if r["param"].endswith("c_attn.weight")} != {"identity"}
    compared = {r["layer"] for r in records if r["check"] == "layer_grad" and r["verdict"] == "pass"}
    assert {"transformer.h.0.attn", "transformer.h.1.mlp.c_fc", "transformer.ln_f"} <= compared
    # torch's nn.GELU and Dropout modules are functions in the port: not compared, each says so
    alone = {r["layer"] for r in records if r["check"] == "layer_forward" and r["verdict"] == "skipped"}
    assert "transformer.h.0.mlp.gelu" in alone and "transformer.h.0.attn" not in alone


@pytest.mark.parametrize("mistake", sorted(GPT_MISTAKE_LAYERS))
def test_a_planted_gpt_port_mistake_is_located_at_its_layer(mistake):
    _needs("torch", "jax")
    records = run_case(CASES[f"gpt_port_{mistake}"], frameworks=["torch", "jax"], dtypes=("float64",))
    first = _first(records)
    assert [r["layer"] for r in first] == [GPT_MISTAKE_LAYERS[mistake]], [r["message"] for r in first]
    assert first[0]["input_agrees"] and first[0]["cause"] == "different-function"
    # every layer that finished before it, its own sublayers aside, agrees
    inside = first[0]["layer"] + "."
    before = [r for r in records if r["check"] == "layer_forward" and r["layer_index"] < first[0]["layer_index"]
              and r["verdict"] != "skipped" and not r["layer"].startswith(inside)]
    assert before and all(r["verdict"] == "pass" for r in before)
    assert not expected.unexpected(records, ENTRIES)
    assert not expected.unobserved(records, [e for e in ENTRIES if e.case == f"gpt_port_{mistake}"])
