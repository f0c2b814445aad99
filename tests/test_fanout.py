"""Fan-out: shards merged equal the unsharded run; the Ray executor equals the local one;
`run --fail-on` picks the verdicts that fail."""
import json

import pytest

from harness.case import Case
from harness.plan import tasks
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
    _, owner, loads = tasks.shard_cases(cases, 1, 3, args)
    _, owner_reversed, _ = tasks.shard_cases(list(reversed(cases)), 1, 3, args)
    assert owner == owner_reversed
    assert sorted(set(owner.values())) == [1, 2, 3]
    assert max(loads) / min(loads) < 1.6
    every = [c.name for k in (1, 2, 3) for c in tasks.shard_cases(cases, k, 3, args)[0]]
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


# ---- the Ray executor's driver, against a stand-in for ray (no cluster, no workers) -----------------
class _FakeRay:
    """What RayRunner uses of ray: remote(fn).options(**resources).remote(key, tasks, threads, options) ->
    an iterator of refs, get(ref), cancel(ref), nodes(), is_initialized(). ``script[key](tasks)`` gives a
    group's items; a ref is a callable returning one item."""

    def __init__(self, script, cpus=2.0):
        self.script, self.cpus = script, cpus
        self.calls, self.cancelled = {}, []

    def is_initialized(self):
        return True

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": self.cpus}}, {"Alive": False, "Resources": {"CPU": 64.0}}]

    def get(self, ref):
        return ref()

    def cancel(self, ref, force=False):
        self.cancelled.append(ref)

    def remote(self, fn):
        fake = self

        class Generator:
            def __init__(self, items):
                self.items = iter(items)

            def __iter__(self):
                return self

            def __next__(self):
                if self in fake.cancelled:
                    raise RuntimeError("task cancelled")
                item = next(self.items)
                return lambda: item() if callable(item) else item

        class Remote:
            def options(self, **resources):
                def call(key, tasks, threads, options):
                    fake.calls[key] = {"resources": resources, "threads": threads, "options": options}
                    return Generator(fake.script[key](tasks))
                return type("Bound", (), {"remote": staticmethod(call)})()

        return Remote()


def _tasks(framework, device, n):
    return [tasks.Task(f"c{i}", "builtin", framework, device, "float32", "eager", "default", 0) for i in range(n)]


def test_ray_runner_relays_observations_arrays_and_logs(tmp_path, monkeypatch):
    from harness.run import executors

    gpu, cpu = ("fa", "cuda:0", "default"), ("fb", "cpu", "default")
    ta, tb = _tasks("fa", "cuda:0", 3), _tasks("fb", "cpu", 2)

    def gpu_items(tasks):   # the node ran on its cuda:1, so its ids name that device
        node_id = tasks[0].id.replace("cuda:0", "cuda:1")
        yield {"kind": "obs", "task": tasks[0].id, "message": {"id": node_id, "status": "ok", "arrays": "x.npz"},
               "arrays": b"npz-bytes", "host": "node1"}
        yield {"kind": "obs", "task": tasks[1].id, "message": {"status": "ok", "arrays": "y.npz"}, "arrays": None,
               "host": "node1"}
        yield {"kind": "done", "hello": {"type": "hello", "version": "1.0"}, "host": "node1",
               "logs": {"fa-cuda1-default.log": b"worker log", "core": b"not a log"}}

    def cpu_items(tasks):
        yield {"kind": "failed", "reason": "RuntimeError: boom", "host": "node2"}
        yield {"kind": "done", "hello": None, "logs": {}, "host": "node2"}

    fake = _FakeRay({gpu: gpu_items, cpu: cpu_items}, cpus=2.0)
    monkeypatch.setattr(executors, "_import_ray", lambda: fake)
    got = []
    runner = executors.RayRunner(tmp_path, lambda task, message: got.append((task.id, message)), threads=4,
                                 task_timeout=5.0)
    runner.run({gpu: ta, cpu: tb})

    by_id = dict(got)
    assert len(got) == 5 and set(by_id) == {t.id for t in ta + tb}
    first = by_id[ta[0].id]
    assert first == {"id": ta[0].id, "status": "ok", "arrays": "c0__fa__cuda:0__float32__eager__default.npz",
                     "host": "node1"}
    assert (tmp_path / "arrays" / first["arrays"]).read_bytes() == b"npz-bytes"
    assert by_id[ta[1].id] == {"id": ta[1].id, "status": "ok", "host": "node1"}
    assert by_id[ta[2].id] == {"id": ta[2].id, "status": "error", "reason": "the Ray task ended without an answer"}
    for t in tb:
        assert by_id[t.id] == {"id": t.id, "status": "error",
                               "reason": "the Ray task for fb cpu failed on node2: RuntimeError: boom"}
    assert runner.workers_info == {gpu: {"type": "hello", "version": "1.0", "host": "node1"}}
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["fa-cuda0-default.log"]
    assert (tmp_path / "logs" / "fa-cuda0-default.log").read_bytes() == b"worker log"
    assert fake.calls[gpu]["resources"] == {"num_gpus": 1, "num_cpus": 1}
    assert fake.calls[cpu]["resources"] == {"num_cpus": 1}   # one CPU a chunk: chunks follow the width
    assert fake.calls[cpu]["threads"] == 4 and fake.calls[cpu]["options"]["task_timeout"] == 5.0


def test_ray_runner_stops_every_group_when_one_fails(tmp_path, monkeypatch):
    """A group whose observations cannot be written (a full disk) stops the run at once: the other
    groups' Ray tasks are cancelled, not left to finish, and the error reaches the caller."""
    import time

    from harness.run import executors
    from harness.errors import OutputError

    bad, slow = ("fa", "cpu", "default"), ("fb", "cpu", "default")

    def bad_items(tasks):
        yield {"kind": "obs", "task": tasks[0].id, "message": {"status": "ok"}, "arrays": None, "host": "h"}

    def slow_items(tasks):
        for _ in range(30):      # 3 s of answers unless cancelled
            yield lambda: (time.sleep(0.1), {"kind": "obs", "task": tasks[0].id, "message": {"status": "ok"},
                                             "arrays": None, "host": "h"})[1]

    def emit(task, message):
        if task.framework == "fa":
            raise OutputError("writing observations.jsonl failed: No space left on device")
        written.append(task.id)

    written = []
    fake = _FakeRay({bad: bad_items, slow: slow_items})
    monkeypatch.setattr(executors, "_import_ray", lambda: fake)
    runner = executors.RayRunner(tmp_path, emit, threads=1)
    start = time.monotonic()
    with pytest.raises(OutputError, match="No space left"):
        runner.run({bad: _tasks("fa", "cpu", 2), slow: _tasks("fb", "cpu", 1)})
    assert time.monotonic() - start < 1.5
    assert runner.stopping and len(written) < 10
