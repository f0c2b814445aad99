"""Verdicts from arrays: tolerances, NaN handling, non-differentiable points, causes."""
import numpy as np

from harness.judge.arrays import compare_arrays
from harness.judge.tolerance import gradient_scale
from harness.judge.tolerance import Tolerance, lookup
from harness.judge.verdicts import build_records

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


def test_a_gpu_forward_mode_off_at_float32_level_where_the_cpu_agrees_is_precision_loss(tmp_path):
    """JAX's max-pool JVP on a GPU rounds float64 to 32 bits (2.4e-8 on an H200): the same check
    passes on the CPU, so the rule is right and the device's kernel loses precision. An O(1) error,
    or one the CPU shares, stays an autodiff bug."""
    g = {"w": np.linspace(1, 2, 4)}

    def jvp_rows(gpu_tangent, cpu_tangent=0.173):
        # the H200's figures: <dL/dx, v> = 0.173, the gradient's scale 1.95, float64 tolerance 1e-9 + 1e-7
        cpu, gpu = _obs(tmp_path, "jax", g), _obs(tmp_path, "jax", g, device="cuda:0")
        cpu["jvp"] = {"tangent": cpu_tangent, "expected": 0.173, "scale": 1.95}
        gpu["jvp"] = {"tangent": gpu_tangent, "expected": 0.173, "scale": 1.95}
        return build_records([cpu, gpu], {}, tmp_path)

    (rec,) = _failing(jvp_rows(0.173 - 4.7e-8), check="jvp")
    assert rec["device"] == "cuda:0" and rec["cause"] == "precision-loss", rec
    assert "passes on the CPU" in rec["message"] and "2.4e-08" in rec["message"]
    (wrong,) = _failing(jvp_rows(0.5), check="jvp")
    assert wrong["cause"] == "ad-bug"
    both = _failing(jvp_rows(0.173 - 4.7e-8, cpu_tangent=0.173 - 4.7e-8), check="jvp")
    assert [r["cause"] for r in both] == ["ad-bug", "ad-bug"]


# ---- causes: precision-loss, NaN at a kink, symmetric conventions, different functions -------------------
def _fd_obs(tmp_path, fw, grads, *, estimate=None, nondiff=None, left=None, right=None, noise=1e-16, value=1.0):
    """A float64 reference observation with full finite differences."""
    fname = f"{fw}-ref.npz"
    estimate = grads if estimate is None else estimate
    arrays = {f"grad/{k}": v for k, v in grads.items()}
    for k, e in estimate.items():
        arrays.update({f"fd_estimate/{k}": e, f"fd_error/{k}": np.zeros_like(e),
                       f"fd_nondiff/{k}": np.zeros(e.shape, bool) if nondiff is None else nondiff[k],
                       f"fd_left/{k}": e if left is None else left[k], f"fd_right/{k}": e if right is None else right[k],
                       f"fd_refined/{k}": np.zeros(e.shape, bool)})
    np.savez(tmp_path / fname, **arrays)
    return {"case": "c", "framework": fw, "device": "cpu", "dtype": "float64", "mode": "eager", "precision": "default",
            "status": "ok", "arrays": fname, "version": "1", "policy": {}, "value": value, "nondeterminism": 0.0,
            "jvp": {"tangent": 1.0, "expected": 1.0, "scale": 1.0}, "params": {k: list(v.shape) for k, v in grads.items()},
            "fd": {"mode": "full", "noise": {"sigma": noise, "relative": noise}}}


def _failing(records, **fields):
    return [r for r in records if r["verdict"] != "pass" and all(r.get(k) == v for k, v in fields.items())]


def test_a_float64_outlier_of_three_frameworks_is_precision_loss_even_within_tolerance(tmp_path):
    g = np.linspace(1.0, 2.0, 6)
    rows = [_fd_obs(tmp_path, "jax", {"w": g}), _fd_obs(tmp_path, "torch", {"w": g * (1 + 1e-16)}),
            _fd_obs(tmp_path, "tensorflow", {"w": g * (1 + 3e-9)})]   # within rtol 1e-7
    bad = _failing(build_records(rows, {}, tmp_path), check="pairwise")
    assert {(r["framework"], r["other_framework"]) for r in bad} == {("jax", "tensorflow"), ("tensorflow", "torch")}
    assert all(r["cause"] == "precision-loss" and "tensorflow's float64 result" in r["message"] for r in bad)
    # two frameworks only, each measured float64-clean (noise 1e-16): a float32-sized distance
    # is neither rounding nor conditioning, so one of them lost precision (which one, nothing says)
    two = _failing(build_records(rows[::2], {}, tmp_path), check="pairwise")
    assert [(r["cause"], "no third framework" in r["message"]) for r in two] == [("precision-loss", True)]
    # ... but where their evaluations are noisy at that level (an ill-conditioned point), it is
    # conditioning, and within tolerance nothing fails
    noisy = [_fd_obs(tmp_path, "jax", {"w": g}, noise=1e-10),
             _fd_obs(tmp_path, "tensorflow", {"w": g * (1 + 3e-9)}, noise=1e-10)]
    assert not _failing(build_records(noisy, {}, tmp_path), check="pairwise")


def test_frameworks_that_agree_at_float64_rounding_raise_no_precision_loss(tmp_path):
    g = np.linspace(1.0, 2.0, 6)
    rows = [_fd_obs(tmp_path, fw, {"w": g * (1 + k * 2e-16)}) for k, fw in enumerate(("jax", "torch", "tensorflow"))]
    assert not _failing(build_records(rows, {}, tmp_path))


def test_a_noisy_float64_evaluation_is_precision_loss_not_an_autodiff_bug(tmp_path):
    g = np.linspace(1.0, 2.0, 6)
    rows = [_fd_obs(tmp_path, "jax", {"w": g * (1 + 3e-8)}, estimate={"w": g * (1 + 3e-5)}, noise=2e-9),
            _fd_obs(tmp_path, "torch", {"w": g}, noise=2e-16)]
    records = build_records(rows, {}, tmp_path)
    fd = _failing(records, check="fd")
    assert [(r["framework"], r["cause"]) for r in fd] == [("jax", "precision-loss")]
    assert "float32-level rounding noise (2.0e-09" in fd[0]["message"]
    assert {r["cause"] for r in _failing(records, check="pairwise")} == {"precision-loss"}


def test_two_noisy_ports_beside_a_clean_one_are_both_precision_loss_where_the_clean_one_vouches(tmp_path):
    """One Keras layer computing float64 in float32 on two backends: both are noisy at float32
    level, the third is clean. A finite-difference failure larger than noise explains by itself
    (a small element's FD swamped by the noise) is still precision-loss when the clean framework
    passes its own FD check and the noisy gradient agrees with it at the float32 tier; a noisy
    gradient that the clean one contradicts stays an autodiff bug."""
    g = np.linspace(1.0, 2.0, 6)
    swamped = g * (1 + 5e-2)                           # beyond NOISE_EXPLAINS
    rows = [_fd_obs(tmp_path, "jax", {"w": g * (1 + 3e-8)}, estimate={"w": swamped}, noise=2e-9),
            _fd_obs(tmp_path, "torch", {"w": g * (1 - 2e-8)}, estimate={"w": swamped}, noise=4e-9),
            _fd_obs(tmp_path, "tensorflow", {"w": g}, noise=1e-17)]
    records = build_records(rows, {}, tmp_path)
    fd = _failing(records, check="fd")
    assert sorted((r["framework"], r["cause"]) for r in fd) == [("jax", "precision-loss"), ("torch", "precision-loss")]
    assert {r["cause"] for r in _failing(records, check="pairwise")} == {"precision-loss"}
    wrong = [_fd_obs(tmp_path, "jax", {"w": g * (1 + 1e-3)}, estimate={"w": swamped}, noise=2e-9), rows[2]]
    assert [(r["framework"], r["cause"]) for r in _failing(build_records(wrong, {}, tmp_path), check="fd")] == [
        ("jax", "ad-bug")]


def test_directional_fd_localised_to_a_kink_is_a_nondiff_convention(tmp_path):
    """Random directions fail; bisection finds the block, whose elements finite differences find
    non-differentiable with autodiff outside the one-sided limits (several ReLU6 inputs exactly at
    a bound, summed into one bias): a convention there, for the localised and the directional record."""
    grads = {"a": np.array([1.0, 2.0]), "beta": np.array([0.3, 0.0, 0.5, 0.0])}
    directions = [{"a": np.array([1.0, 0.0]), "beta": np.array([0.0, 1.0, 0.0, 1.0])}]
    arrays = {f"grad/{k}": v for k, v in grads.items()}
    arrays.update({f"fd_direction0/{k}": v for k, v in directions[0].items()})
    arrays.update({"fd_directional/estimate": np.array([1.0 + 0.4]), "fd_directional/error": np.zeros(1),
                   "fd_localised/index": np.array([1, 3]), "fd_localised/estimate": np.array([0.2, 0.2]),
                   "fd_localised/error": np.zeros(2), "fd_localised/nondiff": np.array([True, True]),
                   "fd_localised/left": np.array([0.1, 0.1]), "fd_localised/right": np.array([0.3, 0.3])})
    np.savez(tmp_path / "torch-dir.npz", **arrays)
    row = {"case": "c", "framework": "torch", "device": "cpu", "dtype": "float64", "mode": "eager",
           "precision": "default", "status": "ok", "arrays": "torch-dir.npz", "version": "1", "policy": {},
           "value": 1.0, "nondeterminism": 0.0, "jvp": {"tangent": 1.0, "expected": 1.0, "scale": 1.0},
           "params": {k: list(v.shape) for k, v in grads.items()},
           "fd": {"mode": "directional", "localised": {"param": "beta", "probes": 5},
                  "noise": {"sigma": 1e-16, "relative": 1e-16}}}
    fd = {r["fd_mode"]: r for r in _failing(build_records([row], {}, tmp_path), check="fd")}
    assert {m: r["cause"] for m, r in fd.items()} == {"directional": "nondiff-convention",
                                                     "directional+bisection": "nondiff-convention"}
    assert "non-differentiable point of beta" in fd["directional"]["message"]
    # the same block with autodiff far from smooth finite differences is an autodiff bug
    arrays["fd_localised/nondiff"] = np.array([False, False])
    np.savez(tmp_path / "torch-dir.npz", **arrays)
    fd = {r["fd_mode"]: r for r in _failing(build_records([row], {}, tmp_path), check="fd")}
    assert {m: r["cause"] for m, r in fd.items()} == {"directional": "ad-bug", "directional+bisection": "ad-bug"}


def test_nan_at_a_kink_is_a_nondiff_convention_naming_each_choice(tmp_path):
    """The norm of a zero row: torch returns the subgradient 0, jax NaN."""
    g = np.array([[0.0, 0.0], [0.6, 0.8]])
    nd = np.array([[True, True], [False, False]])
    left, right = np.array([[-0.7, -0.7], [0.6, 0.8]]), np.array([[0.7, 0.7], [0.6, 0.8]])
    rows = [_fd_obs(tmp_path, "torch", {"x": g}, nondiff={"x": nd}, left={"x": left}, right={"x": right}),
            _fd_obs(tmp_path, "jax", {"x": np.where(nd, np.nan, g)}, estimate={"x": g}, nondiff={"x": nd},
                    left={"x": left}, right={"x": right})]
    records = build_records(rows, {}, tmp_path)
    (fd,) = _failing(records, check="fd")
    assert fd["verdict"] == "nan" and fd["cause"] == "nondiff-convention"
    assert "not differentiable at [0, 0] (one-sided limits -0.7 and 0.7): jax returns nan" in fd["message"]
    (pair,) = _failing(records, check="pairwise")
    assert pair["cause"] == "nondiff-convention" and "jax gives nan, torch gives 0.0" in pair["message"]


def test_nan_at_a_jump_stays_nan_propagation(tmp_path):
    g = np.array([0.0, 1.0])
    nd = np.array([True, False])
    jump = np.array([1e6, 1.0])       # one-sided slopes of size 1/step: a discontinuity
    rows = [_fd_obs(tmp_path, "jax", {"x": np.array([np.nan, 1.0])}, estimate={"x": g}, nondiff={"x": nd},
                    left={"x": jump}, right={"x": jump})]
    (fd,) = _failing(build_records(rows, {}, tmp_path), check="fd")
    assert fd["verdict"] == "nan" and fd["cause"] == "nan-propagation"


def test_a_symmetric_matrix_gradient_convention_is_default_semantics(tmp_path):
    """cholesky of a symmetric input reads its lower triangle; torch returns the symmetrised gradient."""
    lower = np.array([[1.0, 0.0], [0.6, 2.0]])
    sym = (lower + lower.T) / 2
    rows = [_fd_obs(tmp_path, "torch", {"a": sym}, estimate={"a": lower}),
            _fd_obs(tmp_path, "jax", {"a": lower})]
    records = build_records(rows, {}, tmp_path)
    assert {(r["check"], r["cause"]) for r in _failing(records)} == {("fd", "default-semantics"),
                                                                    ("pairwise", "default-semantics")}
    # a gradient wrong along symmetric directions too is an autodiff bug
    rows = [_fd_obs(tmp_path, "torch", {"a": sym * 1.1}, estimate={"a": lower})]
    assert [r["cause"] for r in _failing(build_records(rows, {}, tmp_path), check="fd")] == ["ad-bug"]


def test_gradients_of_different_functions_are_labelled_by_their_forward_values(tmp_path):
    g = np.linspace(1.0, 2.0, 6)
    rows = [_fd_obs(tmp_path, "torch", {"w": g}, value=8.1831036), _fd_obs(tmp_path, "jax", {"w": g * 1.3}, value=7.6874271)]
    records = build_records(rows, {}, tmp_path)
    (pair,) = _failing(records, check="pairwise")
    assert pair["cause"] == "different-function" and "8.1831036" in pair["message"] and "7.6874271" in pair["message"]
    (fwd,) = _failing(records, check="forward")
    assert fwd["cause"] == "different-function"
