"""The native model cases (cases/models_*.py): their weight translations, then their gradients.

A translation error (a transposed kernel, a gate order, a bias left out) is a *correct* gradient
of the wrong function: finite differences cannot see it, only a cross-framework comparison can.
So the translations are tested first on their own -- the forward loss agrees across frameworks in
float64 -- and then every check the harness makes must pass (or fail exactly as an entry of
cases/expected_divergences.toml declares, cause included), except in the one case that compares
default semantics on purpose, which must diverge exactly where expected. Finally, deliberate
translation mistakes must show up as divergences.

Each framework's part skips cleanly when that framework is not installed.
"""
import importlib
import warnings
from functools import lru_cache

import numpy as np
import pytest

from adapters import FRAMEWORKS
from cases import expected as expected_divergences
from harness import Case
from harness.define import seeding
from harness.judge import coverage
from harness.run import inprocess
from harness.worker import observe

MODULES = ("models_dense", "models_cnn", "models_rnn", "models_attention")
CASES = {c.name: c for m in MODULES for c in importlib.import_module(f"cases.{m}").CASES}
FRAMEWORK_NAMES = ("torch", "jax", "tensorflow")
DEFAULT_SEMANTICS = "embedding_layernorm_default_eps"

#: forward losses must agree this closely (relative) in float64
FORWARD_RTOL = 1e-10
#: known, pinned exceptions: (case, framework) -> (rtol, reason). See test_tf_gelu_constant_quirk.
FORWARD_EXCEPTIONS = {
    ("classifier_xent", "tensorflow"): (
        1e-8, "tf.nn.gelu(approximate=False) casts 1/sqrt(2) through float32, even for float64 input"),
}
#: checks a framework may skip, with the reason it gives: (case, framework, check) -> fragment
#: (none: torch's forward mode through its fused CPU attention and RNN kernels now runs on the
#: equivalent math/native kernels, see test_autodiff_failures)
ALLOWED_SKIPS: dict = {}


def installed():
    return [fw for fw in FRAMEWORK_NAMES if FRAMEWORKS[fw].installed()]


def need(*frameworks):
    missing = [fw for fw in frameworks if not FRAMEWORKS[fw].installed()]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


def forward(case, framework, dtype="float64"):
    """The case's loss at its seed-0 point, evaluated natively by ``framework``."""
    a = inprocess.adapter(framework)
    problem = observe.Problem(a, case, dtype, seed=0)
    return a.evaluate_np(problem.f, problem.xs)


@lru_cache(maxsize=None)
def records(name):
    """inprocess.run_case for a library case, once per test session (float64 + float32, CPU)."""
    with warnings.catch_warnings():
        # torch.func.vmap over the fused CPU attention kernel falls back to a loop, and says so
        warnings.filterwarnings("ignore", message=".*batching rule.*")
        rows = []
        recs = tuple(inprocess.run_case(CASES[name], observations=rows))
        # the completeness invariant over the model library: no check missing, none extra
        assert coverage.gaps(recs, rows, {name: CASES[name]}) == []
        assert coverage.extras(recs, rows, {name: CASES[name]}) == []
        return recs


def describe(rec):
    other = f" vs {rec['other_framework']}" if rec.get("other_framework") else ""
    return (f"{rec['case']} {rec['framework']}{other} {rec['dtype']} {rec['check']}[{rec['param']}]: "
            f"{rec['verdict']} (cause {rec.get('cause')}, max_rel_err {rec.get('max_rel_err')}) "
            f"{rec.get('message', '')}")


# ---- the cases themselves ---------------------------------------------------------------------
def test_model_cases_are_native_in_every_framework_and_tagged():
    assert len(CASES) == 9
    defaults = [c.name for c in CASES.values() if "default" in c.tags]
    assert len(defaults) <= 2, defaults
    for case in CASES.values():
        assert set(case.native) == set(FRAMEWORK_NAMES), case.name
        assert case.loss is None, case.name
        assert {"models", "native"} <= set(case.tags), case.name
        assert "quick" not in case.tags, case.name
        params, inputs, wrt = case.build(seeding.case_rng(0, case.name))
        n = sum(params[w].size for w in wrt)
        assert n < 2000, f"{case.name}: {n} differentiated elements: full finite differences get slow"
    assert [c.name for c in CASES.values() if "default-semantics" in c.tags] == [DEFAULT_SEMANTICS]


def test_layout_declarations_match_the_native_layers():
    """Every declared permutation maps a canonical array to the native layer's own shape."""
    cnn = CASES["cnn_bn_pool"]
    params, _, _ = cnn.build(seeding.case_rng(0, cnn.name))
    assert params["conv_w"].shape == (3, 2, 3, 3)  # OIHW
    assert cnn.to_native_layout("tensorflow", "conv_w", params["conv_w"]).shape == (3, 3, 2, 3)  # HWIO
    assert cnn.to_native_layout("torch", "conv_w", params["conv_w"]).shape == (3, 2, 3, 3)
    lstm = CASES["lstm_seq"]
    params, _, _ = lstm.build(seeding.case_rng(0, lstm.name))
    assert params["w_ih"].shape == (3, 16)                                              # (in, 4H)
    assert lstm.to_native_layout("torch", "w_ih", params["w_ih"]).shape == (16, 3)    # weight_ih_l0
    mha = CASES["mha_self"]
    params, _, _ = mha.build(seeding.case_rng(0, mha.name))
    assert mha.to_native_layout("torch", "in_proj_w", params["in_proj_w"]).shape == (24, 8)  # packed (3E, E)


def test_gru_gate_reorder_is_torch_rzn_to_keras_zrh():
    need("tensorflow")
    from cases.models_rnn import gru_torch_to_keras_gates
    cols = np.array([[0.0, 0.0, 1.0, 1.0, 2.0, 2.0]])  # torch's r r z z n n (hidden 2)
    got = np.asarray(gru_torch_to_keras_gates(cols))
    np.testing.assert_array_equal(got, [[1, 1, 0, 0, 2, 2]])  # z z r r n n


def test_keras_call_refuses_a_wrong_shape():
    """A translation producing the wrong shape fails loudly instead of broadcasting."""
    need("tensorflow")
    import tensorflow as tf

    from cases.models_common import keras_call
    from cases.models_rnn import keras_rnn
    layer, _ = keras_rnn("lstm", "float64")
    x = tf.zeros((2, 5, 3), tf.float64)
    good = {"kernel": tf.zeros((3, 16), tf.float64), "recurrent_kernel": tf.zeros((4, 16), tf.float64),
            "bias": tf.zeros((16,), tf.float64)}
    assert keras_call(layer, good, x).shape == (2, 5, 4)
    with pytest.raises(ValueError, match="wants shape"):
        keras_call(layer, {**good, "kernel": tf.zeros((16, 3), tf.float64)}, x)
    with pytest.raises(KeyError):
        keras_call(layer, {k: v for k, v in good.items() if k != "bias"}, x)


# ---- 1. the translations: forward losses agree -----------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_losses_agree_across_frameworks(name):
    frameworks = installed()
    if len(frameworks) < 2:
        pytest.skip("needs two frameworks")
    values = {fw: forward(CASES[name], fw) for fw in frameworks}
    if name == DEFAULT_SEMANTICS:
        # keras' default eps is 1e-3, torch's and jax.nn.standardize's 1e-5: the values differ
        if {"torch", "jax"} <= set(values):
            assert values["jax"] == pytest.approx(values["torch"], rel=FORWARD_RTOL)
        if "tensorflow" in values:
            others = [v for fw, v in values.items() if fw != "tensorflow"]
            assert all(abs(values["tensorflow"] - v) > 1e-4 * abs(v) for v in others), values
        return
    for a in frameworks:
        for b in frameworks:
            if a < b:
                rtol = max(FORWARD_EXCEPTIONS.get((name, a), (FORWARD_RTOL,))[0],
                           FORWARD_EXCEPTIONS.get((name, b), (FORWARD_RTOL,))[0])
                assert values[a] == pytest.approx(values[b], rel=rtol, abs=0), f"{name}: {a} vs {b}: {values}"


def test_tf_gelu_constant_quirk_is_still_present():
    """Pins the reason for FORWARD_EXCEPTIONS: if TensorFlow fixes it, tighten the exception."""
    need("tensorflow")
    import tensorflow as tf
    c = float(tf.cast(0.7071067811865476, tf.float64).numpy())
    assert c == float(np.float32(0.7071067811865476)) and c != 1 / np.sqrt(2), \
        "tf.cast of a python float no longer rounds through float32: drop the classifier_xent forward exception"


ENTRIES = expected_divergences.load()


# ---- 2. the gradients: every check passes ------------------------------------------------------
@pytest.mark.parametrize("name", sorted(set(CASES) - {DEFAULT_SEMANTICS}))
def test_every_check_passes(name):
    if not installed():
        pytest.skip("no framework installed")
    recs = records(name)
    assert recs
    failures = []
    for rec in recs:
        if rec["verdict"] == "pass":
            continue
        fragment = ALLOWED_SKIPS.get((rec["case"], rec["framework"], rec["check"]))
        if rec["verdict"] == "skipped" and fragment and fragment in rec.get("message", ""):
            continue
        # a declared, explained divergence (e.g. TF's float32-rounded gelu constant in float64)
        if any(e.matches(rec) and e.cause == rec.get("cause") for e in ENTRIES):
            continue
        failures.append(describe(rec))
    assert not failures, "\n".join(failures)
    # the comparisons that matter were made: pairwise for every pair, FD for every framework
    frameworks = {r["framework"] for r in recs}
    assert {r["framework"] for r in recs if r["check"] == "fd"} == frameworks
    if len(frameworks) > 1:
        pairs = {(r["framework"], r["other_framework"]) for r in recs if r["check"] == "pairwise"}
        assert len(pairs) == len(frameworks) * (len(frameworks) - 1) // 2


def test_default_eps_diverges_only_against_keras():
    """Keras LayerNormalization's default eps (1e-3) against torch's and jax.nn.standardize's (1e-5):
    tensorflow diverges from both on every parameter, labelled default-semantics; torch and jax
    agree; each framework's own gradient is correct (FD, JVP and float32 reference pass)."""
    need("tensorflow")
    frameworks = installed()
    if len(frameworks) < 2:
        pytest.skip("needs two frameworks")
    recs = records(DEFAULT_SEMANTICS)
    params = {"embedding", "gamma", "beta"}
    for rec in recs:
        if rec["check"] not in ("pairwise", "forward"):
            assert rec["verdict"] == "pass", describe(rec)
            continue
        pair = {rec["framework"], rec["other_framework"]}
        if "tensorflow" in pair:
            assert rec["verdict"] == "diverge" and rec["cause"] == "default-semantics", describe(rec)
            assert rec["param"] in (params if rec["check"] == "pairwise" else {"*"})   # forward: the loss
            # eps 1e-3 vs 1e-5 against unit-variance features: a ~1e-3 effect, not rounding
            assert 1e-4 < rec["max_rel_err"] < 1e-2, describe(rec)
        else:
            assert rec["verdict"] == "pass", describe(rec)
    diverged = {(r["dtype"], frozenset((r["framework"], r["other_framework"])), r["param"])
                for r in recs if r["verdict"] == "diverge" and r["check"] == "pairwise"}
    expected = {(dtype, frozenset(("tensorflow", other)), p)
                for dtype in ("float64", "float32") for other in frameworks if other != "tensorflow"
                for p in params}
    assert diverged == expected


# ---- 3. deliberate translation mistakes are caught --------------------------------------------
def _mistake(case, tensorflow_fn, suffix):
    """``case`` with its TF implementation replaced by a mistranslated one."""
    return Case(name=f"{case.name}_{suffix}", make=case.make, layout=case.layout,
                native={**case.native, "tensorflow": tensorflow_fn}, tags=("models",))


def _gru_gates_untranslated(p, i):
    """The GRU's canonical (torch r, z, n) weights handed to Keras (z, r, h) as they are."""
    import tensorflow as tf

    from cases.models_common import keras_call, keras_dtype
    from cases.models_rnn import keras_rnn
    layer, mse = keras_rnn("gru", keras_dtype(p["w_ih"]))
    weights = {"kernel": p["w_ih"], "recurrent_kernel": p["w_hh"], "bias": tf.stack([p["b_ih"], p["b_hh"]])}
    return mse(i["y"], keras_call(layer, weights, i["x"]))


def _lstm_one_bias(p, i):
    """The LSTM with only b_ih given to Keras' single bias (b_hh forgotten)."""
    from cases.models_common import keras_call, keras_dtype
    from cases.models_rnn import keras_rnn
    layer, mse = keras_rnn("lstm", keras_dtype(p["w_ih"]))
    weights = {"kernel": p["w_ih"], "recurrent_kernel": p["w_hh"], "bias": p["b_ih"]}
    return mse(i["y"], keras_call(layer, weights, i["x"]))


def _mha_heads_interleaved(p, i):
    """The packed projection split into heads in the wrong order: (E, head_dim, heads)."""
    import tensorflow as tf

    from cases import models_attention as m
    from cases.models_common import keras_call, keras_dtype
    mha, mse = m.keras_mha(keras_dtype(p["in_proj_w"]))
    weights = m.keras_mha_weights(p)
    for name in ("query", "key"):
        k = weights[f"{name}/kernel"]
        weights[f"{name}/kernel"] = tf.transpose(tf.reshape(k, (m.EMBED, m.HEAD_DIM, m.HEADS)), (0, 2, 1))
    return mse(i["y"], keras_call(mha, weights, i["x"], i["x"]))


MISTAKES = {
    "gru_gate_order": ("gru_seq", _gru_gates_untranslated),
    "lstm_bias_not_summed": ("lstm_seq", _lstm_one_bias),
    "mha_head_split": ("mha_self", _mha_heads_interleaved),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_translation_mistake_is_a_divergence(mistake):
    """FD cannot see a mistranslation (the wrong function's gradient is right); the forward check
    and the pairwise comparison can."""
    need("tensorflow", "torch")
    base, fn = MISTAKES[mistake]
    case = _mistake(CASES[base], fn, mistake)
    right, wrong = forward(case, "torch"), forward(case, "tensorflow")
    assert abs(right - wrong) > 1e-6 * abs(right), (right, wrong)
    recs = inprocess.run_case(case, frameworks=["torch", "tensorflow"], dtypes=("float64",))
    fd = [r for r in recs if r["check"] == "fd" and r["framework"] == "tensorflow"]
    assert fd and all(r["verdict"] == "pass" for r in fd), [describe(r) for r in fd]
    pairwise = [r for r in recs if r["check"] == "pairwise"]
    assert pairwise and any(r["verdict"] == "diverge" for r in pairwise), [describe(r) for r in pairwise]
    # no excuse offered: the diagnosis is that the two compute different functions (each passes its
    # own fd, the forward values differ), with both loss values; a parameter the mistranslation
    # drops altogether (the LSTM's b_hh) is named as one the port's loss does not depend on
    unused = {r["param"] for r in pairwise if r["cause"] == "unused-parameter"}
    assert unused == ({"b_hh"} if mistake == "lstm_bias_not_summed" else set()), [describe(r) for r in pairwise]
    assert all(r["independent_in"] == "tensorflow" for r in pairwise if r["param"] in unused)
    assert all(r["cause"] == "different-function" and "forward values differ" in r["message"]
               for r in pairwise if r["verdict"] == "diverge" and r["param"] not in unused), \
        [describe(r) for r in pairwise]
    assert any(r["check"] == "forward" and r["verdict"] == "diverge" for r in recs)
