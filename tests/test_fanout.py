"""Fan-out: shards merged equal the unsharded run; the Ray executor equals the local one;
`run --fail-on` picks the verdicts that fail."""
import json

import pytest

from harness import plan
from harness.case import Case
from tests.conftest import FRAMEWORKS
from tests.helpers import harness, results

needs_two = pytest.mark.skipif(not (FRAMEWORKS["torch"].installed() and FRAMEWORKS["jax"].installed()),
                               reason="needs torch and jax")
CHEAP = ("--cases", "linear_mse,op_max_ties,op_relu", "--frameworks", "torch,jax", "--dtypes", "float64",
         "--timing", "off", "--jobs", "2")


def _comparable(recs):
    return sorted(json.dumps({k: v for k, v in r.items() if k != "run_id"}, sort_keys=True) for r in recs)


def _body(report_text):
    """The report without its run-specific lines (run id, command, times)."""
    drop = ("# gradharness report", "`python -m harness", "| command", "| run id", "| started", "| wall time",
            "| merged from", "|---", "| run ")
    return [" ".join(line.split()) for line in report_text.splitlines() if not line.startswith(drop)]


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("fanout") / "all"
    proc = harness("run", *CHEAP, "--out", out, "--quiet", "--fail-on", "nan,error")
    # op_max_ties diverges (frameworks pick different subgradients at ties): not a failure under this --fail-on
    assert proc.returncode == 0, proc.stderr
    assert any(r["verdict"] == "diverge" for r in results(out))
    return out


@needs_two
def test_shards_merged_equal_the_unsharded_run(unsharded, tmp_path):
    codes = []
    for k in (1, 2):
        proc = harness("run", *CHEAP, "--out", tmp_path / f"s{k}", "--shard", f"{k}/2", "--quiet")
        codes.append(proc.returncode)
        assert proc.returncode in (0, 1), proc.stderr
    shard_cases = [set(json.loads((tmp_path / f"s{k}" / "run.json").read_text())["cases"]) for k in (1, 2)]
    assert shard_cases[0] and shard_cases[1] and not shard_cases[0] & shard_cases[1]
    assert sorted(codes) == [0, 1]               # only the shard with op_max_ties fails (default --fail-on)
    proc = harness("merge", tmp_path / "s1", tmp_path / "s2", "--out", tmp_path / "merged")
    assert proc.returncode == 1, proc.stderr     # the merged run diverges exactly like the unsharded one
    assert _comparable(results(tmp_path / "merged")) == _comparable(results(unsharded))
    assert _body((tmp_path / "merged" / "report.md").read_text()) == _body((unsharded / "report.md").read_text())
    # same seed, same machine: compare sees no gradient change (arrays compared bitwise-equal)
    proc = harness("compare", unsharded, tmp_path / "merged", "--fail-on", "divergence,change")
    assert proc.returncode == 0, proc.stdout
    assert "No change" in proc.stdout and "gradient array(s) compared" in proc.stdout
    # merging the same shard twice, or overlapping shards, is refused
    proc = harness("merge", tmp_path / "s1", tmp_path / "s1", "--out", tmp_path / "bad")
    assert proc.returncode == 2 and not (tmp_path / "bad").exists()


def test_sharding_is_balanced_and_independent_of_order():
    def make(rng, n):
        return {"w": rng.normal(size=n)}, {}

    cases = [Case(name=f"c{i}", make=lambda rng, n=n: make(rng, n), loss=lambda o, p, i: o.sum(p["w"]))
             for i, n in enumerate([10, 5000, 20000, 300, 7000, 12, 900, 40000])]
    args = {"frameworks": ["torch", "jax"], "devices": ["cpu"], "dtypes": ["float64", "float32"],
            "modes": ["eager"], "precisions": ["default"], "seed": 0, "fd_mode": "auto", "timing": "quick"}
    _, owner, loads = plan.shard_cases(cases, 1, 3, args)
    _, owner_reversed, _ = plan.shard_cases(list(reversed(cases)), 1, 3, args)
    assert owner == owner_reversed
    assert sorted(set(owner.values())) == [1, 2, 3]
    assert max(loads) / min(loads) < 1.6
    every = [c.name for k in (1, 2, 3) for c in plan.shard_cases(cases, k, 3, args)[0]]
    assert sorted(every) == sorted(c.name for c in cases)


def test_shard_usage_errors(tmp_path):
    for bad in ("3/2", "0/2", "x", "1/0"):
        proc = harness("run", "--cases", "linear_mse", "--shard", bad, "--out", tmp_path / "x")
        assert proc.returncode == 2 and "--shard" in proc.stderr and not (tmp_path / "x").exists()
    proc = harness("run", "--cases", "linear_mse", "--fail-on", "explode", "--out", tmp_path / "x")
    assert proc.returncode == 2 and "--fail-on" in proc.stderr and not (tmp_path / "x").exists()


@needs_two
@pytest.mark.skipif(not __import__("importlib").util.find_spec("ray"), reason="ray not installed (extra 'ray')")
def test_ray_executor_gives_the_same_results_as_local(unsharded, tmp_path):
    out = tmp_path / "ray"
    proc = harness("run", *CHEAP, "--out", out, "--quiet", "--executor", "ray", "--fail-on", "error")
    assert proc.returncode == 0, proc.stderr
    assert _comparable(results(out)) == _comparable(results(unsharded))
    assert json.loads((out / "run.json").read_text())["executor"] == "ray"
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["jax-cpu-default.log", "torch-cpu-default.log"]
