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
    assert planted == {f"gpt_port_{m}" for m in GPT_MISTAKE_LAYERS} | {"lstm_port_gate_order"}
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


def test_the_linen_port_of_a_resnet_with_batch_norm_agrees_layer_by_layer_in_nhwc():
    _needs("torch", "jax")
    records = run_case(CASES["resnet_port"], frameworks=["torch", "jax"], dtypes=("float64", "float32"))
    failing = [r for r in records if r["verdict"] not in ("pass", "skipped")]
    assert not failing, failing[:3]
    rules = {r["param"]: r["port_rule"] for r in records if r["check"] == "pairwise" and r["dtype"] == "float64"}
    assert rules["layer1.conv1.weight"] == "conv layout OIHW -> HWIO" and rules["bn1.weight"] == "identity"
    # running statistics are state, not parameters: never differentiated, still mapped
    assert not any("running" in p for p in rules)
    layers = {r["layer"]: r for r in records if r["check"] == "layer_forward" and r["dtype"] == "float64"}
    # a square feature map (8 channels, 8x8) fits either layout: the values tell, and the record says
    assert layers["conv1"]["layout"] == "channels-last to channels-first" and layers["conv1"]["verdict"] == "pass"
    assert layers["layer2.downsample.0"]["other_port_layer"] == "layer2.downsample.0"
    assert layers["layer2.downsample.0"]["port_layer"] == "layer2/downsample_conv"
    assert layers["fc"]["layout"] == "same"


def test_a_hand_written_lstm_port_maps_by_structure_and_a_gate_order_swap_is_located():
    _needs("torch", "jax")
    good = run_case(CASES["lstm_port"], frameworks=["torch", "jax"], dtypes=("float64",))
    assert all(r["verdict"] == "pass" for r in good), [r for r in good if r["verdict"] != "pass"][:3]
    rules = {r["param"]: (r["port_param"], r["port_rule"]) for r in good if r["check"] == "pairwise"}
    assert rules["lstm.bias_ih_l0"] == rules["lstm.bias_hh_l0"] == ("lstm/b", "bias_ih_l0 + bias_hh_l0")
    assert rules["lstm.weight_ih_l0"][0] == "lstm/w_ih"
    bad = run_case(CASES["lstm_port_gate_order"], frameworks=["torch", "jax"], dtypes=("float64",))
    first = _first(bad)
    assert [r["layer"] for r in first] == ["lstm"] and first[0]["input_agrees"]
    embed = next(r for r in bad if r["check"] == "layer_forward" and r["layer"] == "embed")
    assert embed["verdict"] == "pass"
    assert not expected.unexpected(bad, ENTRIES)


def test_one_keras_model_runs_under_three_backends_each_in_its_own_worker(tmp_path):
    """The CLI's workers set KERAS_BACKEND to their framework: the same model definition is checked
    under Keras's tensorflow, jax and torch backends, tensorflow's weights mapped to the others by
    name; float32 agrees, float64 shows Keras's float32 batch norm off TensorFlow, located at bn1."""
    _needs("torch", "jax", "tensorflow")
    from tests.helpers import harness, results

    out = tmp_path / "run"
    proc = harness("run", "--cases", "keras_small_convnet", "--timing", "off", "--fail-on", "new", "--out", out,
                   "--quiet")
    assert proc.returncode == 0, proc.stderr   # every divergence is in the expected table
    rows = results(out)
    assert not [r for r in rows if r["verdict"] == "error"]
    pairs = {frozenset((r["framework"], r["other_framework"])) for r in rows if r["check"] == "pairwise"}
    assert pairs == {frozenset(p) for p in (("jax", "tensorflow"), ("jax", "torch"), ("tensorflow", "torch"))}
    assert all(r["verdict"] == "pass" for r in rows if r["dtype"] == "float32")
    # the float64 losses differ by the float32 rounding of the jax and torch backends' batch norm
    assert all(r["verdict"] == "pass" if r["dtype"] == "float32" else r["cause"] == "precision-loss"
               for r in rows if r["check"] == "forward")
    first = [r for r in rows if r.get("first_divergence") and r["check"] == "layer_forward"]
    assert {r["layer"] for r in first} == {"bn1"} and len(first) == 3
    assert all(r["input_agrees"] and r["max_rel_err"] < 1e-6 for r in first)
    assert not expected.unexpected(rows, ENTRIES)
