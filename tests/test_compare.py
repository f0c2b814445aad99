"""Verdicts from arrays: tolerances, NaN handling, non-differentiable points, causes."""
import numpy as np

from harness.compare import build_records, compare_arrays
from harness.tolerance import gradient_scale
from harness.tolerance import Tolerance, lookup

TOL = Tolerance(rtol=1e-4, atol=1e-5)


def test_pass_within_tolerance_and_worst_element_located():
    e = np.array([[1.0, 2.0], [3.0, 4.0]])
    g = e.copy()
    g[1, 0] += 1e-2
    c = compare_arrays(g, e, TOL, scale=4.0)
    assert c.verdict == "diverge" and c.worst_index == [1, 0]
    assert c.got == 3.01 and c.expected == 3.0
    assert np.isclose(c.max_rel_err, 1e-2 / 4)
    assert compare_arrays(e * (1 + 1e-6), e, TOL, 4.0).verdict == "pass"


def test_near_zero_elements_are_judged_against_the_gradient_scale():
    e = np.array([100.0, 1e-9])
    g = np.array([100.0, 1e-6])        # huge relative error on a negligible element
    assert compare_arrays(g, e, TOL, scale=100.0).verdict == "pass"


def test_nan_in_one_side_only_is_nan_verdict():
    e = np.array([1.0, 2.0])
    c = compare_arrays(np.array([1.0, np.nan]), e, TOL, 2.0)
    assert c.verdict == "nan" and c.worst_index == [1] and c.nonfinite_side == "got"
    assert compare_arrays(np.array([np.inf, 2.0]), np.array([np.inf, 2.0]), TOL, 2.0).verdict == "pass"


def test_nondiff_elements_pass_inside_one_sided_limits_only():
    e = np.array([0.5, 2.0])          # FD's symmetric estimate at a kink
    left, right = np.array([0.0, 2.0]), np.array([1.0, 2.0])
    nondiff = np.array([True, False])
    for convention in (0.0, 1.0, 0.5):
        c = compare_arrays(np.array([convention, 2.0]), e, TOL, 2.0, nondiff=nondiff, left=left, right=right)
        assert c.verdict == "pass" and c.nondiff_elements == 1
    c = compare_arrays(np.array([3.0, 2.0]), e, TOL, 2.0, nondiff=nondiff, left=left, right=right)
    assert c.verdict == "diverge" and c.outside_hull == 1


def test_tolerance_overrides_merge_field_by_field():
    t = lookup("float32", {"float32": {"rtol": 1e-2}})
    assert t.rtol == 1e-2 and t.atol == lookup("float32").atol
    assert lookup("float64", None, key="fd").rtol > lookup("float64").rtol


def test_gradient_scale_ignores_nonfinite_and_zero():
    assert gradient_scale({"a": np.array([np.nan, -3.0]), "b": np.array([1.0])}) == 3.0
    assert gradient_scale({"a": np.zeros(3)}) == 1.0


def _obs(tmp_path, fw, grads, *, dtype="float64", device="cpu", policy=None, name="x"):
    fname = f"{fw}-{dtype}-{device}.npz"
    np.savez(tmp_path / fname, **{f"grad/{k}": v for k, v in grads.items()})
    return {"case": "c", "framework": fw, "device": device, "dtype": dtype, "mode": "eager",
            "precision": "default", "status": "ok", "arrays": fname, "version": "1", "policy": policy or {},
            "value": 1.0, "nondeterminism": 0.0, "jvp": {"tangent": 1.0, "expected": 1.0, "scale": 1.0}}


def test_precision_policy_cause_from_recorded_policy(tmp_path):
    g = {"w": np.linspace(1, 2, 10)}
    rows = [_obs(tmp_path, "jax", g), _obs(tmp_path, "torch", g),
            _obs(tmp_path, "jax", {"w": g["w"] * (1 + 5e-4)}, dtype="float32", device="cuda:0",
                 policy={"reduced_precision_float32": True}),
            _obs(tmp_path, "torch", {"w": g["w"] * (1 + 4e-7)}, dtype="float32", device="cuda:0",
                 policy={"reduced_precision_float32": False})]
    records = build_records(rows, {}, tmp_path)
    bad = [r for r in records if r["verdict"] != "pass"]
    assert {(r["check"], r["framework"]) for r in bad} == {("reference", "jax"), ("pairwise", "jax")}
    assert all(r["cause"] == "precision-policy" for r in bad)
    assert all("rerun with --precision default,highest" in r["message"] for r in bad)
