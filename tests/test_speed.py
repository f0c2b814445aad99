"""A run's speed machinery, each piece against what it promises: chunks of whole cases balanced by
cost, quiet windows that really stop the other workers (and continue them), measured task seconds
that rebalance the next run, adaptive quick timing that stops early only when the spread is small,
and the compilation caches each worker is pointed at (and a second run that loads from them)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.case import Case
from harness.plan import tasks
from harness.run import cache, history
from harness.run.local import worker_env
from harness.worker import quiet
from harness.worker.timing import blocked_autorange
from tests.conftest import FRAMEWORKS
from tests.helpers import harness, results


def _plan(n_cases, frameworks=("torch", "jax", "tensorflow"), sizes=None):
    def make(rng, n):
        return {"w": rng.normal(size=n)}, {}

    sizes = sizes or [10 + 997 * i % 5000 for i in range(n_cases)]
    cases = [Case(name=f"c{i:02d}", make=lambda rng, n=n: make(rng, n), loss=lambda o, p, i: o.sum(p["w"]))
             for i, n in enumerate(sizes)]
    plan = tasks.make_plan(cases, list(frameworks), ["cpu"], ["float64", "float32"], ["eager"], ["default"], 0,
                           "auto", "quick")
    return cases, plan, tasks.task_costs(plan.tasks, {c.name: c for c in cases})


# ---- chunks ----------------------------------------------------------------------------------------
def test_chunks_are_whole_cases_balanced_by_cost_and_cover_every_task():
    cases, plan, costs = _plan(40)
    groups = plan.groups()
    chunks = tasks.chunk_groups(groups, costs, 6, min_cost=0.0)
    assert sorted(t.id for c in chunks for t in c.tasks) == sorted(t.id for t in plan.tasks)   # each once
    for c in chunks:
        assert {t.group for t in c.tasks} == {c.key}
        for case in c.cases:      # whole cases: every task of the case in this group is in this chunk
            assert sorted(t.id for t in c.tasks if t.case == case) == \
                sorted(t.id for t in groups[c.key] if t.case == case)
    # a group's share of the chunks follows its share of the cost (jax's tasks cost the most)
    per = {fw: sum(c.key[0] == fw for c in chunks) for fw in ("torch", "jax", "tensorflow")}
    assert per["jax"] > per["torch"] and sum(per.values()) == len(chunks)
    for key in groups:
        mine = [c.cost for c in chunks if c.key == key]
        assert max(mine) / min(mine) < 1.5                       # balanced within a group
    assert [c.cost for c in chunks] == sorted((c.cost for c in chunks), reverse=True)   # largest first
    # deterministic, and the same whatever the order of the plan
    again = tasks.chunk_groups({k: list(reversed(v)) for k, v in reversed(list(groups.items()))}, costs, 6,
                               min_cost=0.0)
    assert sorted((c.key, tuple(c.cases)) for c in again) == sorted((c.key, tuple(c.cases)) for c in chunks)


def test_small_groups_are_not_split_and_one_lane_keeps_one_chunk_per_group():
    _, plan, costs = _plan(3)
    groups = plan.groups()
    assert [(c.key, c.count) for c in tasks.chunk_groups(groups, costs, 1)] == [(k, 1) for k in groups]
    # too little work to be worth a framework's start: one chunk a group however many lanes
    assert all(c.count == 1 for c in tasks.chunk_groups(groups, costs, 8))
    assert sorted(c.log_name for c in tasks.chunk_groups(groups, costs, 8)) == \
        ["jax-cpu-default.log", "tensorflow-cpu-default.log", "torch-cpu-default.log"]


# ---- quiet windows ----------------------------------------------------------------------------------
def _state(pid) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not (quiet.SUPPORTED and Path("/proc/self/stat").exists()), reason="needs SIGSTOP and /proc")
def test_a_quiet_window_stops_the_other_workers_and_continues_them(tmp_path):
    room = quiet.Room(tmp_path / "room")
    others = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
              for _ in range(2)]
    try:
        for p in others:
            room.join(p.pid)
        room.join(os.getpid())                        # this process is the timer: never stopped
        began = time.perf_counter()
        with room.window() as stopped:
            time.sleep(0.2)
            assert stopped == 2 and {_state(p.pid) for p in others} == {"T"}
        ended = time.perf_counter()
        time.sleep(0.05)
        assert {_state(p.pid) for p in others} <= {"R", "S"}
        # the window is logged, and a duration spanning it leaves it out
        assert room.paused(began, ended) == pytest.approx(ended - began, abs=0.05)
        assert room.paused(ended + 1, ended + 2) == 0.0
        # a timer that dies in its window: the runner continues the rest
        os.killpg(others[0].pid, signal.SIGSTOP)
        room.resume_all()
        time.sleep(0.05)
        assert _state(others[0].pid) != "T"
        room.leave(others[0].pid)
        assert others[0].pid not in room.members()
    finally:
        for p in others:
            p.kill()
            p.wait()


def test_without_a_room_a_window_is_a_plain_block(monkeypatch):
    monkeypatch.delenv(quiet.ENV, raising=False)
    with quiet.window() as stopped:
        assert stopped == 0
    assert quiet.paused(0.0, 1e9) == 0.0


# ---- measured costs ---------------------------------------------------------------------------------
def test_measured_seconds_rebalance_the_next_run(tmp_path):
    _, plan, costs = _plan(6, frameworks=("torch", "tensorflow"))
    assert history.refine(costs, plan.tasks, None) is costs and history.refine(costs, plan.tasks, tmp_path) == costs
    # the last run found tensorflow ten times slower than the model thought
    rows = [{"id": t.id, "status": "ok", "seconds": 1.0 if t.framework == "torch" else 10.0} for t in plan.tasks]
    rows.append({"id": plan.tasks[0].id + "x", "status": "ok", "seconds": 5.0})   # not a task of this plan
    history.record(plan.tasks, rows, tmp_path)
    refined = history.refine(costs, plan.tasks, tmp_path)
    tf = [t.id for t in plan.tasks if t.framework == "tensorflow"]
    torch = [t.id for t in plan.tasks if t.framework == "torch"]
    assert refined[tf[0]] == pytest.approx(10 * refined[torch[0]])
    assert sum(refined.values()) == pytest.approx(sum(costs.values()))   # the model's units, the measured shares
    # a task measured under other settings (no timing) is not taken for this one
    other = [tasks.Task(t.case, t.source, t.framework, t.device, t.dtype, t.mode, t.precision, 0, t.fd, t.fd_mode, None)
             for t in plan.tasks]
    assert history.refine({t.id: 1.0 for t in other}, other, tmp_path) == {t.id: 1.0 for t in other}


# ---- adaptive quick timing --------------------------------------------------------------------------
class Clock:
    """A clock the call advances by a scripted amount per call (no sleeping)."""

    def __init__(self, per_call):
        self.now, self.per_call, self.calls = 0.0, per_call, 0

    def __call__(self):
        return self.now

    def call(self):
        self.now += self.per_call(self.calls)
        self.calls += 1


def test_adaptive_timing_stops_when_the_spread_is_small_and_runs_on_when_not():
    steady = Clock(lambda i: 1e-3)
    m = blocked_autorange(steady.call, lambda r: None, clock=steady, min_run_time=0.01, max_run_time=0.05,
                          target_iqr=0.05, min_blocks=5, min_block_time=2e-3)
    assert len(m.times) == 5 and sum(m.times) * m.block < 0.02           # settled at the minimum
    noisy = Clock(lambda i: 1e-3 * (1 + (i // 2) % 3))                  # blocks 2-6 ms apart: IQR ~50%
    m = blocked_autorange(noisy.call, lambda r: None, clock=noisy, min_run_time=0.01, max_run_time=0.05,
                          target_iqr=0.05, min_blocks=5, min_block_time=2e-3)
    assert sum(m.times) * m.block >= 0.05                               # all the time it may have
    fixed = Clock(lambda i: 1e-3)                                       # not adaptive: min_run_time alone
    m = blocked_autorange(fixed.call, lambda r: None, clock=fixed, min_run_time=0.05, min_blocks=5,
                          min_block_time=2e-3)
    assert sum(m.times) * m.block >= 0.05


# ---- compilation caches -----------------------------------------------------------------------------
def test_each_worker_is_pointed_at_its_frameworks_cache(tmp_path):
    jax_env = worker_env("jax", "cpu", 1, cache_dir=tmp_path)
    assert jax_env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "jax")
    assert jax_env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    assert worker_env("torch", "cpu", 1, cache_dir=tmp_path)["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torchinductor")
    for fw in ("jax", "torch", "tensorflow"):
        env = worker_env(fw, "cpu", 1)
        assert "JAX_COMPILATION_CACHE_DIR" not in env or env["JAX_COMPILATION_CACHE_DIR"] == os.environ.get(
            "JAX_COMPILATION_CACHE_DIR")
    assert cache.worker_env("tensorflow", tmp_path) == {}


def test_the_default_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.default_dir() == tmp_path / "gradharness"
    monkeypatch.setenv(cache.ENV, str(tmp_path / "mine"))
    assert cache.default_dir() == tmp_path / "mine"


@pytest.mark.skipif(not FRAMEWORKS["jax"].installed(), reason="needs jax")
def test_a_second_run_loads_what_the_first_compiled(tmp_path):
    """Eager JAX's primitives land in the cache folder; the second run's first calls (compiles in
    the first) load them instead, with the same records; --no-cache writes nothing there."""
    spec = ("--cases", "mlp_tanh,op_tanh", "--frameworks", "jax", "--dtypes", "float64", "--jobs", "1")
    store = tmp_path / "cache"
    runs = []
    for k in (1, 2):
        proc = harness("run", *spec, "--out", tmp_path / f"r{k}", "--quiet", "--cache-dir", store)
        assert proc.returncode in (0, 1), proc.stderr
        runs.append(tmp_path / f"r{k}")
    assert len(list((store / "jax").iterdir())) > 20
    assert json.loads((store / history.FILE).read_text())
    firsts = []
    for run in runs:
        rows = [json.loads(line) for line in (run / "observations.jsonl").read_text().splitlines()]
        firsts.append(sum(r["timing"]["forward+backward"]["first_call"] for r in rows))
    assert firsts[1] < 0.7 * firsts[0], firsts        # loading, not compiling

    def comparable(run):
        return sorted(json.dumps({k: v for k, v in r.items() if k not in ("run_id",)}, sort_keys=True)
                      for r in results(run) if r["check"] != "timing")
    assert comparable(runs[0]) == comparable(runs[1])
    proc = harness("run", *spec, "--out", tmp_path / "r3", "--quiet", "--no-cache", "--timing", "off",
                   "--cache-dir", tmp_path / "unused")
    assert proc.returncode in (0, 1) and not (tmp_path / "unused").exists()
