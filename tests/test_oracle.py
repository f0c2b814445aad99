"""The oracle: planted bugs are caught with the right label and element; kinks are not bugs;
smooth float32 runs raise no false alarm; large gradients are checked along directions and
localised by bisection."""
import pytest

from harness import Case
from harness.run import inprocess
from tests.conftest import FRAMEWORKS
from tests.planted import torch_square

torch = pytest.importorskip("torch") if FRAMEWORKS["torch"].installed() else None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


def _make(rng):
    return {"w": rng.normal(size=(3, 4))}, {"x": rng.normal(size=(5, 3))}


def _failing(records, check=None):
    """Failing records; a known upstream framework bug (torch's mse fwd-over-rev HVP) is not the oracle's."""
    return [r for r in records if r["verdict"] not in ("pass", "skipped") and not r.get("upstream")
            and (check is None or r["check"] == check)]


@needs_torch
def test_wrong_custom_jvp_is_caught_by_the_forward_mode_check():
    class Square(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(w):
            return w * w

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])
            ctx.save_for_forward(inputs[0])

        @staticmethod
        def backward(ctx, grad):
            (w,) = ctx.saved_tensors
            return 2 * w * grad

        @staticmethod
        def jvp(ctx, tangent):
            (w,) = ctx.saved_tensors
            return 3 * w * tangent          # planted: should be 2 * w * tangent

    case = Case(name="wrong_jvp", make=_make, native={"torch": lambda p, i: torch.sum(torch.tanh(i["x"] @ Square.apply(p["w"])))})
    records = inprocess.run_case(case, frameworks=["torch"], dtypes=("float64",))
    bad = _failing(records)
    assert [(r["check"], r["cause"]) for r in bad] == [("jvp", "ad-bug")]
    assert all(r["verdict"] == "pass" for r in records if r["check"] == "fd")


@needs_torch
def test_wrong_second_derivative_is_caught_by_the_hvp_check():
    # planted: the right gradient, but with no second derivative
    Square = torch_square(lambda w, grad: 2 * w.detach() * grad)

    case = Case(name="wrong_hvp", make=_make, tags=("twice-differentiable",),
                native={"torch": lambda p, i: torch.sum(torch.tanh(i["x"] @ Square.apply(p["w"])))})
    records = inprocess.run_case(case, frameworks=["torch"], dtypes=("float64",))
    hvp = [r for r in records if r["check"] == "hvp" and r.get("method") == "rev-over-rev"]
    assert hvp and hvp[0]["verdict"] == "diverge" and hvp[0]["cause"] == "ad-bug" and hvp[0]["param"] == "w"
    assert all(r["verdict"] == "pass" for r in records if r["check"] == "fd")


def _kinks(rng):
    x = rng.normal(size=(2, 3))
    x[0, 1] = 0.0           # relu's and abs's kink
    x[1, 2] = 0.0
    return {"x": x}, {}


@pytest.mark.parametrize("framework", [fw for fw, i in FRAMEWORKS.items() if i.installed()])
def test_kinks_are_labelled_nondiff_not_ad_bug(framework):
    case = Case(name="kinks", make=_kinks, loss=lambda o, p, i: o.add(o.sum(o.relu(p["x"])), o.sum(o.abs(p["x"]))))
    records = inprocess.run_case(case, frameworks=[framework], dtypes=("float64",))
    fd = [r for r in records if r["check"] == "fd"]
    assert fd and fd[0]["verdict"] == "pass" and fd[0]["nondiff_elements"] == 2
    assert "one-sided" in fd[0]["message"]
    assert not _failing(records)


def test_smooth_cases_in_float32_raise_no_false_alarm():
    from harness.define.loader import select
    for case in select("mlp_tanh,softmax_xent,elementwise_chain,linear_mse"):
        records = inprocess.run_case(case, dtypes=("float64", "float32"))
        assert not _failing(records), [(r["case"], r["check"], r["framework"], r["max_rel_err"]) for r in _failing(records)]


@needs_torch
def test_directional_check_localises_a_planted_bug_by_bisection():
    class Planted(torch.autograd.Function):
        @staticmethod
        def forward(ctx, w):
            ctx.save_for_backward(w)
            return torch.sin(w)

        @staticmethod
        def backward(ctx, grad):
            (w,) = ctx.saved_tensors
            g = torch.cos(w) * grad
            g.view(-1)[777] *= 1.01      # planted: one element, 1% off
            return g

    def make(rng):
        return {"a": rng.normal(size=(50,)), "w": rng.normal(size=(40, 50))}, {}

    case = Case(name="big", make=make, native={"torch": lambda p, i: torch.sum(Planted.apply(p["w"]) * p["a"])})
    records = inprocess.run_case(case, frameworks=["torch"], dtypes=("float64",), fd_mode="directional")
    fd = [r for r in records if r["check"] == "fd"]
    assert fd[0]["param"] == "*" and fd[0]["verdict"] == "diverge"
    local = fd[1]
    assert local["param"] == "w" and local["worst_index"] == [777 // 50, 777 % 50]
    assert local["verdict"] == "diverge" and local["cause"] == "ad-bug"
    assert "bisection" in local["message"]


def test_complex_step_is_exact_where_analytic_and_skipped_where_not():
    from harness.define.loader import select
    (chain,) = select("elementwise_chain")
    records = inprocess.run_case(chain, dtypes=("float64",), fd_mode="complex")
    complex_checks = [r for r in records if r["check"] == "complex"]
    assert {r["framework"] for r in complex_checks} == set(inprocess.installed())
    assert all(r["verdict"] == "pass" and r["max_rel_err"] < 1e-14 for r in complex_checks)
    if FRAMEWORKS["tensorflow"].installed():
        (mlp,) = select("mlp_tanh")
        tf = [r for r in inprocess.run_case(mlp, frameworks=["tensorflow"], dtypes=("float64",), fd_mode="complex")
              if r["check"] == "complex"]
        # tf.math.squared_difference conjugates: its complex extension is not analytic
        assert [r["verdict"] for r in tf] == ["skipped"] and "not analytic" in tf[0]["message"]


@needs_torch
def test_complex_step_catches_a_planted_bug():
    square = torch_square(lambda w, grad: 2 * w * grad * 1.001)   # planted: 0.1% off everywhere
    case = Case(name="wrong_by_a_little", make=_make,
                native={"torch": lambda p, i: torch.sum(torch.tanh(i["x"] @ square.apply(p["w"])))})
    records = inprocess.run_case(case, frameworks=["torch"], dtypes=("float64",), fd_mode="complex")
    bad = {(r["check"], r["cause"]) for r in _failing(records)}
    assert ("complex", "ad-bug") in bad and ("fd", "ad-bug") in bad
