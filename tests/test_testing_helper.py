"""harness.testing.assert_gradients_agree: the pytest helper users put in their own test suites,
and the progress display of a run."""
import io

import pytest

from harness.plan.tasks import Task
from harness.run.progress import Progress
from harness.testing import assert_gradients_agree
from tests.conftest import FRAMEWORKS
from tests.planted import torch_square, wrong_at

needs_two = pytest.mark.skipif(not (FRAMEWORKS["torch"].installed() and FRAMEWORKS["jax"].installed()),
                               reason="needs torch and jax")


def make(rng):
    return {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}, {"x": rng.normal(size=(5, 3))}


def jax_loss(p, i):
    import jax.numpy as jnp
    return jnp.sum(jnp.tanh(i["x"] @ (p["w"] * p["w"]) + p["b"]))


def torch_loss(p, i):
    import torch
    return torch.sum(torch.tanh(i["x"] @ (p["w"] * p["w"]) + p["b"]))


def torch_wrong(p, i):
    import torch
    square = torch_square(wrong_at((2, 1), -1.0))   # planted: one element's sign
    return torch.sum(torch.tanh(i["x"] @ square.apply(p["w"]) + p["b"]))


@needs_two
def test_agreeing_callables_pass_and_return_the_records():
    records = assert_gradients_agree(make=make, native={"torch": torch_loss, "jax": jax_loss},
                                     frameworks=("torch", "jax"), dtypes=("float64", "float32"))
    checks = {r["check"] for r in records}
    assert {"fd", "jvp", "reference", "pairwise"} <= checks
    assert all(r["verdict"] in ("pass", "skipped") for r in records)


@needs_two
def test_planted_divergence_fails_with_the_reports_localised_message():
    with pytest.raises(AssertionError) as info:
        assert_gradients_agree(make=make, native={"torch": torch_wrong, "jax": jax_loss}, name="planted",
                               frameworks=("torch", "jax"), dtypes=("float64",))
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0].startswith("gradients of case planted disagree")
    # the root cause first: torch's own finite-difference check, at the planted element, with both values
    assert lines[1].startswith("case planted, param w, fd torch float64 cpu: max_rel=")
    assert "worst at (2, 1): got " in lines[1] and "cause ad-bug" in lines[1] and "(tolerance rtol" in lines[1]
    assert any("pairwise jax vs torch" in line and "torch fails its finite-difference check" in line
               for line in lines)
    assert "param b" not in message             # b's gradient is right


@needs_two
def test_a_case_object_and_a_tolerance_override():
    from harness.define.loader import builtin_cases

    case = next(c for c in builtin_cases() if c.name == "linear_mse")
    assert_gradients_agree(case, frameworks=("torch", "jax"), dtypes=("float32",))
    # an impossible tolerance makes float32 vs its float64 reference fail, with the tolerance in the message
    with pytest.raises(AssertionError, match=r"reference .* float32 cpu: .*tolerance rtol 1e-15, atol 1e-20"):
        assert_gradients_agree(case, frameworks=("torch",), dtypes=("float32",), tolerance={"rtol": 1e-15, "atol": 1e-20})


def test_missing_framework_skips_the_test():
    with pytest.raises(pytest.skip.Exception):
        assert_gradients_agree(make=make, native={"mxnet": lambda p, i: 0.0}, frameworks=("mxnet",))


def _tasks():
    return [Task(f"case{i}", "builtin", fw, "cpu", "float64", "eager", "default", 0, fd=(i == 0))
            for fw in ("torch", "jax") for i in range(3)]


def test_progress_lines_without_a_terminal_name_the_task_and_an_eta():
    stream = io.StringIO()
    p = Progress(stream=stream, bar=False)
    tasks = _tasks()
    p.start(tasks, {}, "/tmp/run")
    for t in tasks:
        p.update(t, {"status": "ok" if t.case != "case1" else "error", "reason": "boom", "seconds": 0.1})
    p.close()
    out = stream.getvalue().splitlines()
    assert out[0] == "running 6 task(s) in 2 worker group(s) → /tmp/run"
    assert out[1].startswith("[1/6] case0 · torch cpu float64 eager: ok") and "ETA" in out[1]
    assert any(line.startswith("[2/6] case1 · torch") and "error" in line and "boom" in line for line in out)
    assert len(out) == 7


def test_progress_bar_shows_the_current_task():
    stream = io.StringIO()
    p = Progress(stream=stream, bar=True, min_interval=0)
    tasks = _tasks()
    p.start(tasks, {}, None)
    p.update(tasks[0], {"status": "ok", "seconds": 0.1})
    assert p.current == "case1 · torch cpu float64 eager"
    for t in tasks[1:3]:
        p.update(t, {"status": "ok", "seconds": 0.1})
    assert p.current == "case0 · jax cpu float64 eager"     # the next worker group's first task
    for t in tasks[3:]:
        p.update(t, {"status": "ok", "seconds": 0.1})
    p.close()
    assert "6/6 tasks" in stream.getvalue()
