"""harness fuzz without frameworks: the generator makes only valid programs, reductions shrink and
stay valid, the filters sort records as their principle says, and a traced case is its program."""
import json
import warnings

import numpy as np
import pytest

from harness.define.loader import builtin_cases
from harness.fuzz import triage
from harness.fuzz.driver import perturbed
from harness.fuzz.generate import OPSET, Generator, invalid
from harness.fuzz.numpy_ops import NUMPY_OPS
from harness.fuzz.program import Node, Point, Program, cases_from_file, evaluate, loss, member_of, pack_case
from harness.fuzz.shrink import reductions, smaller, values
from harness.fuzz.trace import TraceError, trace


def _programs(n, seed=0, **kw):
    gen, rng, out = Generator(**kw), np.random.default_rng(seed), []
    draws = 0
    while len(out) < n:
        draws += 1
        made = gen.program(rng)
        if made is not None:
            out.append(made)
    return gen, draws, out


def test_the_generator_makes_only_valid_programs_and_counts_what_it_discards():
    gen, draws, made = _programs(300)
    assert gen.stats.made == 300 and gen.stats.made + sum(gen.stats.discarded.values()) == draws
    assert all(isinstance(reason, str) and reason for reason in gen.stats.discarded)
    sizes, styles, ops = set(), set(), set()
    for program, point in made:
        assert invalid(program, point) == ""
        helpers = 3 * sum(op in ("eigh", "cholesky") for op in program.ops())   # (a + a^T) / 2
        assert 1 <= len(program.nodes) - helpers <= 6
        assert set(program.ops()) <= set(OPSET) | {"greater"}
        used = {a for node in program.nodes for a in node.refs()} | {program.output}
        assert {n for n, _ in program.params} <= used                      # no unused leaf
        assert all(f"n{k}" in used for k in range(len(program.nodes)))     # no dead node
        again = Program.from_json(json.loads(json.dumps(program.to_json())))
        assert again == program
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = evaluate(NUMPY_OPS, program, point.params)
        assert np.shape(y) == point.weights.shape and np.isfinite(y).all()
        sizes.add(len(program.nodes))
        styles.update(point.styles.values())
        ops.update(program.ops())
    assert {1, 2, 3, 4, 5, 6} <= sizes
    assert {"normal", "zeros", "ties", "bounds", "large", "small", "singular", "repeated"} <= styles
    assert len(ops) > 0.8 * len(OPSET)


def test_an_invalid_program_is_named_as_such():
    program = Program((("x0", (3,)),), (Node("log", ("x0",)),))
    assert invalid(program, Point({"x0": np.array([-1.0, 1.0, 2.0])}, np.ones(3))) == \
        "non-finite forward (float64 numpy)"
    singular = Program((("x0", (2, 2)),), (Node("inv", ("x0",)),))
    assert "linear algebra" in invalid(singular, Point({"x0": np.ones((2, 2))}, np.ones((2, 2))))


def test_reductions_are_smaller_valid_programs():
    _, _, made = _programs(60, seed=1)
    rng = np.random.default_rng(0)
    for program, point in made:
        for small, at in reductions(program, point, rng):
            assert invalid(small, at) == ""
            assert smaller((small, at), (program, point))
            assert np.shape(values(small, at)[small.output]) == at.weights.shape


def test_a_node_becomes_a_leaf_holding_its_exact_value():
    program = Program((("x0", (3,)),), (Node("exp", ("x0",)), Node("sin", ("n0",)), Node("sum", ("n1",))))
    point = Point({"x0": np.array([0.1, 0.2, 0.3])}, np.array(1.0))
    cut = [p for p, pt in reductions(program, point, np.random.default_rng(0))
           if p.ops() == ["sin", "sum"] and len(p.params) == 1]
    assert cut
    (small,) = [(p, pt) for p, pt in reductions(program, point, np.random.default_rng(0))
                if p.ops() == ["sin", "sum"] and np.allclose(pt.params["x0"], np.exp(point.params["x0"]))]
    assert np.isclose(loss(NUMPY_OPS, *small[:1], small[1].params, {"w": small[1].weights}),
                      loss(NUMPY_OPS, program, point.params, {"w": point.weights}))


def test_a_pack_is_the_sum_of_its_members_and_names_each_members_leaves():
    _, _, made = _programs(3, seed=2)
    case = pack_case("pk", made)
    params, inputs = case.make(None)
    assert member_of("p2_x0") == (2, "x0") and member_of("*") is None and member_of("x0") is None
    total = case.loss(NUMPY_OPS, params, inputs)
    assert np.isclose(total, sum(loss(NUMPY_OPS, p, pt.params, {"w": pt.weights}) for p, pt in made))


def test_a_programs_file_round_trips_through_its_case_file(tmp_path):
    from harness.fuzz.batch import Item, write_programs

    _, _, made = _programs(4, seed=3)
    items = [Item(f"a{i}", p, pt) for i, (p, pt) in enumerate(made[:2])] + [Item("k", None, None, members=tuple(made[2:]))]
    write_programs(tmp_path, items)
    cases = cases_from_file(tmp_path / "programs.json")
    assert [c.name for c in cases] == ["a0", "a1", "k"]
    params, inputs = cases[0].make(None)
    assert all(np.array_equal(params[k], made[0][1].params[k]) for k in params)


def test_perturbation_moves_a_tie_off_itself():
    program = Program((("x0", (4,)),), (Node("max", ("x0",), (("axis", None), ("keepdims", False))),))
    point = Point({"x0": np.array([2.0, 2.0, 0.5, 2.0])}, np.array(1.0))
    moved = perturbed(program, point, np.random.default_rng(0))
    assert len(set(moved.params["x0"].tolist())) == 4
    assert np.allclose(moved.params["x0"], point.params["x0"], rtol=1e-2)


# ---- the filters ----------------------------------------------------------------------------
def _rec(check="reference", framework="torch", dtype="float32", mode="eager", param="x0", verdict="diverge",
         cause=None, err=1e-3, other=None, case="c", got=None, device="cpu"):
    return {"case": case, "check": check, "framework": framework, "other_framework": other, "dtype": dtype,
            "mode": mode, "param": param, "verdict": verdict, "cause": cause, "max_abs_err": err,
            "max_rel_err": err, "message": "", "got": got, "expected": got, "device": device}


def test_a_float32_error_within_k_times_the_best_frameworks_is_dropped_and_beyond_it_kept():
    rows = [_rec(framework="torch", err=3e-6), _rec(framework="jax", err=1e-6, verdict="pass")]
    assert triage.judge(rows[0], rows) == triage.Verdict("dropped", "precision-floor", triage.judge(rows[0], rows).why)
    far = [_rec(framework="torch", err=1e-3), _rec(framework="jax", err=1e-6, verdict="pass")]
    assert triage.judge(far[0], far).kind == "candidate"
    pair = [_rec(check="pairwise", framework="jax", other="torch", err=2e-6), *rows]
    assert triage.judge(pair[0], pair).label == "precision-floor"
    assert triage.judge(_rec(dtype="float64", err=1e-3), [_rec(dtype="float64", err=1e-3)]).kind == "candidate"


def test_a_gpu_gradient_is_judged_against_the_noise_floor_on_its_own_device():
    """CPU vs GPU: a float32 GPU gradient is rounding only when it is within K times the best
    framework's float32 error on that GPU; the CPU's (smaller) floor must not excuse it, nor hide it."""
    gpu = _rec(framework="torch", device="cuda:0", err=3e-5)
    # a CPU float32 error of 1e-5 would excuse 3e-5 (within 10x) on the CPU: not on the GPU
    cpu_floor = [gpu, _rec(framework="jax", device="cpu", err=1e-5, verdict="pass")]
    assert triage.judge(gpu, cpu_floor).kind == "candidate"
    gpu_floor = [gpu, _rec(framework="jax", device="cuda:0", err=1e-5, verdict="pass")]
    assert triage.judge(gpu, gpu_floor).label == "precision-floor"
    # and a GPU floor does not excuse a CPU error
    cpu = _rec(framework="torch", err=3e-5)
    assert triage.judge(cpu, [cpu, *gpu_floor[1:]]).kind == "candidate"
    # the same divergence on two devices is two signatures (and a finding names its device)
    assert triage.signature(gpu) != triage.signature(dict(gpu, device="cpu"))
    assert triage.signature(gpu)[5] == "cuda:0"
    # NaN alike in every framework on the GPU is shared there, whatever the CPU computed
    nan_gpu = [_rec(check="pairwise", dtype="float64", framework="jax", other=fw, verdict="nan", device="cuda:0")
               for fw in ("torch", "tensorflow")]
    fine_cpu = [_rec(check="pairwise", dtype="float64", framework="jax", other=fw, verdict="pass")
                for fw in ("torch", "tensorflow")]
    assert triage.judge(nan_gpu[0], nan_gpu + fine_cpu).label == "shared-nan"


def test_a_gpu_divergence_is_its_own_finding_not_a_duplicate_of_the_cpus(tmp_path):
    from harness.fuzz.driver import Finding, Fuzzer, FuzzSettings

    program = Program((("x0", (2,)),), (Node("sin", ("x0",), ()),))
    point = Point({"x0": np.zeros(2)}, np.ones(2))
    cpu_rec, gpu_rec = _rec(device="cpu"), _rec(device="cuda:0")
    fuzzer = Fuzzer(FuzzSettings(budget=1, frameworks=["torch"], dtypes=["float32"], modes=["eager"], out=tmp_path))
    found = Finding("F001", triage.signature(cpu_rec), "reference", program, point, cpu_rec, None, "c", (1, 2))
    fuzzer.outcome.findings.append(found)
    assert fuzzer._covered(triage.signature(cpu_rec), "reference", program) is found
    assert fuzzer._covered(triage.signature(gpu_rec), "reference", program) is None
    gpu = Finding("F002", triage.signature(gpu_rec), "reference", program, point, gpu_rec, None, "c", (1, 2))
    assert gpu.key != found.key


def test_a_gpu_findings_scripts_run_on_its_gpu_against_the_cpu_float64_reference():
    from harness.fuzz.outputs import checks_for

    asked = []

    class Batch:
        def gradients(self, case, framework, dtype, mode, device="cpu", precision="default"):
            asked.append((framework, dtype, mode, device) + (() if precision == "default" else (precision,)))
            return {"x0": np.ones(3)}

    class Found:
        id, case, batch, point = "F001", "c0", Batch(), None
        record = dict(_rec(device="cuda:0"), atol=1e-6, rtol=1e-5)

    checks = checks_for(Found, np.random.default_rng(0))
    assert checks["torch"]["device"] == "cuda:0" and checks["torch"]["kind"] == "reference"
    assert asked == [("torch", "float64", "eager", "cpu")]
    Found.record = dict(_rec(check="pairwise", other="jax", device="cuda:0"), atol=1e-6, rtol=1e-5)
    asked.clear()
    checks = checks_for(Found, np.random.default_rng(0))
    assert {c["device"] for c in checks.values()} == {"cuda:0"}
    assert asked == [("torch", "float32", "eager", "cuda:0"), ("jax", "float32", "eager", "cuda:0")]
    # a divergence under --precision highest: its scripts set full float32, its arrays are that run's
    Found.record = dict(Found.record, precision="highest")
    asked.clear()
    checks = checks_for(Found, np.random.default_rng(0))
    assert {c["precision"] for c in checks.values()} == {"highest"}
    assert asked == [("torch", "float32", "eager", "cuda:0", "highest"), ("jax", "float32", "eager", "cuda:0", "highest")]


def test_the_judges_conventions_and_precision_causes_are_not_findings():
    for cause, kind in (("nondiff-convention", "apart"), ("default-semantics", "apart"),
                        ("precision-loss", "apart"), ("ad-bug", "candidate")):
        rec = _rec(check="fd", dtype="float64", cause=cause)
        assert triage.judge(rec, [rec]).kind == kind, cause
    for cause in ("precision-loss", "precision-policy"):
        rec = _rec(check="pairwise", dtype="float32", cause=cause, other="jax")
        assert triage.judge(rec, [rec]).kind == "dropped", cause
    # float64 off at float32's level: an intermediate in float32, reported apart, not a wrong derivative
    close = _rec(check="fd", dtype="float64", err=4e-8)
    assert triage.judge(close, [close]).label == "precision-loss"
    error = _rec(check="run", verdict="error")
    assert triage.judge(error, [error]) .label == "error"


def test_nan_in_every_framework_alike_is_shared_and_nan_in_one_is_a_candidate():
    alike = [_rec(check="fd", dtype="float64", framework=fw, verdict="nan") for fw in ("torch", "jax")]
    alike.append(_rec(check="pairwise", dtype="float64", framework="jax", other="torch", verdict="nan"))
    assert all(triage.judge(r, alike).label == "shared-nan" for r in alike)
    one = [_rec(check="fd", dtype="float64", framework="torch", verdict="nan"),
           _rec(check="fd", dtype="float64", framework="jax", verdict="pass")]
    assert triage.judge(one[0], one).kind == "candidate"


def test_an_error_far_below_the_loss_is_below_resolution():
    rows = [_rec(check="jvp", dtype="float64", param="*", err=3e-26),
            _rec(check="forward", dtype="float64", param="*", verdict="pass", other="jax", got=1.5)]
    assert triage.judge(rows[0], rows).label == "below-resolution"
    rows[0]["max_abs_err"], rows[0]["max_rel_err"] = 1e-6, 0.5
    assert triage.judge(rows[0], rows).kind == "candidate"


def test_eigh_of_a_matrix_not_symmetric_by_construction_is_default_semantics():
    bare = Program((("x0", (3, 3)),), (Node("eigh", ("x0",), (), 0),))
    assert "symmetric by construction" in triage.misused_semantics(bare)
    symmetrised = Program((("x0", (3, 3)),), (Node("transpose", ("x0",)), Node("add", ("x0", "n0")),
                                              Node("mul", ("n1", {"const": 0.5})), Node("eigh", ("n2",), (), 0)))
    assert triage.misused_semantics(symmetrised) == ""
    _, _, made = _programs(300, seed=4)
    assert all(triage.misused_semantics(p) == "" for p, _ in made)   # the generator symmetrises


# ---- tracing (harness repro) ----------------------------------------------------------------
def test_a_neutral_case_traces_to_the_program_of_its_loss():
    cases = {c.name: c for c in builtin_cases()}
    program, point, wrt = trace(cases["op_softmax"])
    params, inputs, _ = cases["op_softmax"].build(np.random.default_rng(0))
    assert "softmax" in program.ops() and wrt == ("x",)
    traced = loss(NUMPY_OPS, program, point.params, {"w": point.weights})
    assert np.isclose(traced, cases["op_softmax"].loss(NUMPY_OPS, *_built(cases["op_softmax"])))
    with pytest.raises(TraceError, match="natively"):
        trace(cases["op_gelu_native_default"])


def _built(case):
    from harness.define.seeding import case_rng

    params, inputs, _ = case.build(case_rng(0, case.name))
    return params, inputs
