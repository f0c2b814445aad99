"""Every framework differentiates the same point, and a framework's own warnings are recorded.

A make() returning framework tensors is refused naming the key; every observation carries a
digest of what make built, and the judge refuses to compare two whose digests differ (an `error`
record, never a phantom divergence). Warnings raised during a check, even under
``warnings.simplefilter("error")``, are recorded in the observation instead of failing it.
"""
import warnings

import numpy as np
import pytest

from harness import Case, CaseError
from harness.case import input_digest
from harness.judge import coverage
from harness.judge import verdicts
from harness.run.inprocess import installed, run_case
from harness.worker.warning_log import capture

FAILING = ("diverge", "nan")


def _neutral_loss(ops, p, i):
    return ops.sum(ops.tanh(p["w"]) * i["x"])


# ---- 5: inputs must be numpy ----------------------------------------------------------------------------
def test_a_make_returning_a_torch_tensor_is_rejected_in_one_line_naming_the_key():
    torch = pytest.importorskip("torch")
    case = Case(name="torch_made", loss=_neutral_loss,
                make=lambda rng: ({"w": torch.randn(3, dtype=torch.float64)}, {"x": rng.normal(size=3)}))
    with pytest.raises(CaseError) as err:
        case.build(np.random.default_rng(0))
    text = str(err.value)
    assert "\n" not in text and "params['w'] is a torch.Tensor, not a numpy array" in text
    # through the real path: every task of the case is one `run` error saying so, nothing is compared
    records = run_case(case, frameworks=["torch"], dtypes=("float64",))
    assert records and all(r["verdict"] == "error" for r in records)
    assert all("params['w'] is a torch.Tensor" in r["message"] for r in records if r["check"] == "run")


def test_a_list_of_foreign_values_is_rejected_and_plain_numbers_are_converted():
    class ArrayLike:   # anything numpy could coerce but is not numpy: refused, not guessed at
        def __array__(self, dtype=None, copy=None):
            return np.ones(3)

    bad = Case(name="listed", loss=_neutral_loss, make=lambda rng: ({"w": np.ones(3)}, {"x": [ArrayLike()]}))
    with pytest.raises(CaseError, match=r"inputs\['x'\] is a list holding a .*ArrayLike, not a numpy array"):
        bad.build(np.random.default_rng(0))
    plain = Case(name="plain", loss=_neutral_loss, make=lambda rng: ({"w": [0.5, 1, 2.0]}, {"x": 3}))
    params, inputs, _ = plain.build(np.random.default_rng(0))
    assert params["w"].dtype == np.float64 and inputs["x"].dtype.kind == "i"


def test_the_digest_covers_names_shapes_and_values():
    w, x = np.arange(6.0), np.ones(2)
    base = input_digest({"w": w}, {"x": x})
    assert base == input_digest({"w": w.copy()}, {"x": x.copy()})
    assert base != input_digest({"w": w.reshape(2, 3)}, {"x": x})
    assert base != input_digest({"v": w}, {"x": x})
    assert base != input_digest({"w": w + 1e-16 * 8}, {"x": x})
    assert base != input_digest({"w": w, "x": x}, {})


def _row(tmp_path, fw, digest, dtype="float64"):
    name = f"{fw}-{dtype}.npz"
    np.savez(tmp_path / name, **{"grad/w": np.ones(3) * (2.0 if fw == "torch" else 1.0)})
    return {"case": "c", "framework": fw, "device": "cpu", "dtype": dtype, "mode": "eager", "precision": "default",
            "status": "ok", "version": "1", "policy": {}, "params": {"w": [3]}, "arrays": name, "value": 1.0,
            "nondeterminism": 0.0, "jvp": {"tangent": 1.0, "expected": 1.0, "scale": 1.0}, "inputs_digest": digest,
            "task": {"fd": False, "fd_mode": "auto", "timing": None}}


def test_the_judge_refuses_to_compare_observations_of_differing_inputs(tmp_path):
    # gradients that would diverge (2 vs 1), made from different inputs: an error, not a divergence
    rows = [_row(tmp_path, "jax", "a" * 64), _row(tmp_path, "torch", "b" * 64)]
    records = verdicts.build_records(rows, {}, tmp_path)
    refused = [r for r in records if r["check"] in ("pairwise", "forward")]
    assert {r["check"] for r in refused} == {"pairwise", "forward"}
    for r in refused:
        assert r["verdict"] == "error" and r["other_framework"] == "torch"
        assert "the inputs differ: jax float64 cpu eager made inputs aaaaaaaaaaaa, torch float64 cpu eager made " \
               "bbbbbbbbbbbb" in r["message"]
    assert not [r for r in records if r["verdict"] in FAILING]
    assert coverage.gaps(records, rows, {}) == []
    # the same digest: compared as always (and the planted difference found)
    same = [_row(tmp_path, "jax", "a" * 64), _row(tmp_path, "torch", "a" * 64)]
    assert {r["verdict"] for r in verdicts.build_records(same, {}, tmp_path) if r["check"] == "pairwise"} == {"diverge"}


def _torch_generator_make(rng):
    import torch

    return {"w": torch.randn(4, dtype=torch.float64).numpy()}, {"x": rng.normal(size=4)}


def test_a_make_drawing_from_torch_generator_is_an_inputs_differ_error_not_a_divergence():
    """numpy values, but drawn from torch's unseeded global generator: each task gets other ones."""
    pytest.importorskip("torch")
    frameworks = [fw for fw in ("jax", "torch") if fw in installed()]
    case = Case(name="torch_generator", make=_torch_generator_make, loss=_neutral_loss)
    rows = []
    records = run_case(case, frameworks=frameworks, dtypes=("float64", "float32"), observations=rows)
    assert not [r for r in records if r["verdict"] in FAILING], "a phantom divergence from differing inputs"
    assert len({r["inputs_digest"] for r in rows}) == len(rows)     # every task drew other values
    refused = [r for r in records if r["verdict"] == "error" and "the inputs differ" in r["message"]]
    assert {r["check"] for r in refused} >= {"reference"} | ({"pairwise", "forward"} if len(frameworks) > 1 else set())
    for r in refused:
        assert r["framework"] in r["message"] and (r.get("other_framework") or r["framework"]) in r["message"]


# ---- 7: a framework's own warnings are recorded, not raised ---------------------------------------------
def _scripted_helper(x):
    return x


def _torch_loss_that_warns(p, i):
    import torch

    torch.jit.script(_scripted_helper)   # torch >= 2.10 warns "torch.jit.script is deprecated" from its own code
    return (torch.tanh(p["w"]) * i["x"]).sum()


def test_a_framework_deprecation_under_a_strict_filter_is_recorded_not_raised():
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings(record=True) as probe:
        warnings.simplefilter("always")
        torch.jit.script(_scripted_helper)
    if not any(issubclass(w.category, DeprecationWarning) for w in probe):
        pytest.skip(f"torch {torch.__version__} does not deprecate torch.jit.script")
    case = Case(name="torch_warns", make=lambda rng: ({"w": rng.normal(size=3)}, {"x": rng.normal(size=3)}),
                native={"torch": _torch_loss_that_warns})
    rows = []
    before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        records = run_case(case, frameworks=["torch"], dtypes=("float64",), observations=rows)
        assert warnings.filters[0][0] == "error"   # the strict filter is left as it was
    assert warnings.filters == before
    assert records and all(r["verdict"] == "pass" for r in records), [r for r in records if r["verdict"] != "pass"]
    (row,) = rows
    seen = [w for w in row["warnings"] if w["category"] == "DeprecationWarning" and "torch.jit.script" in w["message"]]
    assert seen and seen[0]["origin"] == "framework" and seen[0]["where"].startswith("torch")


def _loss_that_warns(ops, p, i):
    warnings.warn("this case's own deprecation", DeprecationWarning)
    return _neutral_loss(ops, p, i)


def test_a_warning_in_the_case_code_is_recorded_as_the_case_and_does_not_fail_the_check():
    if not installed():
        pytest.skip("no framework installed")
    case = Case(name="case_warns", make=lambda rng: ({"w": rng.normal(size=3)}, {"x": rng.normal(size=3)}),
                loss=_loss_that_warns)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = run_case(case, frameworks=installed()[:1], dtypes=("float64",), observations=rows)
    assert records and all(r["verdict"] == "pass" for r in records)
    (mine,) = [w for w in rows[0]["warnings"] if w["message"] == "this case's own deprecation"]
    assert mine["origin"] == "case" and mine["count"] > 1 and mine["where"].endswith(f":{_line_of_warn()}")


def _line_of_warn() -> int:
    return _loss_that_warns.__code__.co_firstlineno + 1


def test_capture_records_distinct_warnings_and_restores_the_filters():
    before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strict = list(warnings.filters)
        with capture() as log:
            for k in range(3):
                warnings.warn("same", DeprecationWarning)
            for k in range(40):
                warnings.warn(f"varying {k}", UserWarning)
        assert warnings.filters == strict
    assert warnings.filters == before
    rows = log.rows()
    assert rows[0]["category"] == "DeprecationWarning" and rows[0]["count"] == 3
    assert len(rows) == 21 and rows[-1]["message"] == "21 more warning(s) not kept"
