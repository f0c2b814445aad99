"""Timing: syncs asynchronous work, keeps the first call apart, records policy and fields, and
detects contention (a CPU-burning process started during a timing) rather than publishing it."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from harness.worker import contention
from harness.worker.timing import PRESETS, RETRIES, blocked_autorange, measure
from tests.helpers import harness, results


class FakeAsyncDevice:
    """Work is queued by call() and completes only at sync(): like CUDA or XLA dispatch."""

    def __init__(self, seconds_per_call):
        self.cost = seconds_per_call
        self.done_at = time.perf_counter()

    def call(self):
        self.done_at = max(self.done_at, time.perf_counter()) + self.cost
        return self.done_at

    def sync(self, result=None):
        wait = self.done_at - time.perf_counter()
        if wait > 0:
            time.sleep(wait)


def test_timer_waits_for_asynchronous_work():
    device = FakeAsyncDevice(2e-3)
    m = blocked_autorange(device.call, device.sync, min_run_time=0.1, min_block_time=5e-3)
    assert m.median == pytest.approx(2e-3, rel=0.25)
    # without the sync the same work looks free: the harness's measurement is not that
    unsynced = blocked_autorange(device.call, lambda r: None, min_run_time=0.02)
    assert unsynced.median < 2e-4


class CostlySync(FakeAsyncDevice):
    """A device whose sync costs time of its own even when the work is done."""

    def __init__(self, seconds_per_call, sync_cost):
        super().__init__(seconds_per_call)
        self.sync_cost = sync_cost

    def sync(self, result=None):
        super().sync(result)
        time.sleep(self.sync_cost)


def test_a_call_long_enough_is_timed_alone_and_synced():
    # overlap between calls would be measured if blocks held more than one: they must not
    device = FakeAsyncDevice(3e-3)
    for preset in PRESETS.values():
        m = blocked_autorange(device.call, device.sync, **dict(preset, min_run_time=0.05, min_blocks=5))
        assert m.block == 1
    assert m.median == pytest.approx(3e-3, rel=0.25)


def test_a_costly_sync_grows_the_block_until_it_is_negligible():
    device = CostlySync(1e-3, sync_cost=1e-3)
    m = blocked_autorange(device.call, device.sync, min_run_time=0.3, min_block_time=2e-3)
    assert m.overhead >= 1e-3
    assert m.block * 1e-3 >= 0.5 * m.overhead / 0.01   # ~100+ calls: a 2 ms floor alone timed each call with its sync
    assert m.median == pytest.approx(1e-3, rel=0.1)     # the sync adds ~1%, not 100%


def test_first_call_is_timed_apart_from_steady_state():
    calls = []

    def call():
        time.sleep(0.05 if not calls else 1e-3)
        calls.append(1)

    m = blocked_autorange(call, lambda r: None, min_run_time=0.05, min_block_time=2e-3)
    assert m.first_call >= 0.05
    assert m.median == pytest.approx(1e-3, rel=0.5)
    assert len(m.times) >= 5 and m.block >= 1
    d = m.as_dict()
    for key in ("times", "block", "first_call", "median", "iqr", "noisy"):
        assert key in d


def test_timing_records_have_documented_fields_and_policy(tmp_path):
    out = tmp_path / "run"
    proc = harness("run", "--cases", "linear_mse", "--dtypes", "float32", "--out", out, "--timing", "quick")
    assert proc.returncode == 0, proc.stderr
    timing = [r for r in results(out) if r["check"] == "timing"]
    assert {r["param"] for r in timing} == {"forward", "forward+backward"}
    for r in timing:
        for key in ("median_s", "iqr_s", "times", "block", "first_call_s", "noisy", "threads", "policy",
                    "contended", "contention", "load", "cpu_per_wall", "cpu_wait", "cpu_others", "cpu_stolen",
                    "calibration_share", "attempts", "timing_case"):
            assert key in r, key
        assert r["median_s"] > 0 and len(r["times"]) >= 5
        assert set(r["calibration_share"]) == {"start", "end"} and r["timing_case"] is False
        assert r["contended"] == bool(r["contention"])
        assert "reduced_precision_float32" in r["policy"]
    report = (out / "report.md").read_text()
    assert "## Timings" in report and "Timing divergences" in report
    assert (out / "timing.png").exists()


def test_timing_off_writes_no_timing_records(tmp_path):
    out = tmp_path / "run"
    proc = harness("run", "--cases", "elementwise_chain", "--dtypes", "float64", "--frameworks", "torch",
                   "--out", out, "--timing", "off")
    assert proc.returncode == 0, proc.stderr
    assert not [r for r in results(out) if r["check"] == "timing"]


# ---- contention: detected, re-measured, marked ----------------------------------------------------

QUIET = {"share": 1.0, "shares": [1.0, 1.0, 1.0], "rate": [1e5, 1e5, 1e5]}


class Burners:
    """Processes spinning on every CPU (twice over): started on the first call of a timing, so the
    machine turns busy during it, as when another job starts next to a benchmark."""

    def __init__(self):
        self.procs = []

    def start(self):
        if not self.procs:
            n = 2 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
            self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(n, 4))]
            time.sleep(0.3)   # interpreters started and spinning

    def stop(self):
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def test_cpu_burners_started_during_a_timing_mark_it_contended():
    """Steady contention looks like a slower machine, not like noise: the calibration loop, the
    run-queue account and the spread must see it, re-measure, and mark the cell."""
    a = np.random.default_rng(0).standard_normal((96, 96))
    burners = Burners()

    def call():
        burners.start()
        return np.tanh(a @ a).sum()

    try:
        m = measure(call, lambda r: None, "quick")
    finally:
        burners.stop()
    assert m.contended, m.as_dict()
    assert m.attempts == RETRIES["quick"] + 1          # measured again, still contended
    d = m.as_dict()
    assert d["contended"] and d["contention"] and len(d["load"]) == 2 and d["cpu"] and d["cpu_per_wall"] > 0
    assert set(d["calibration"]) == {"start", "end"}


def test_a_contended_measurement_is_taken_again_and_the_quiet_one_kept():
    device = FakeAsyncDevice(1e-3)
    busy = dict(QUIET, share=0.3)
    answers = iter([QUIET, busy, QUIET, QUIET])   # start, end of attempt 1; start, end of attempt 2
    m = measure(device.call, device.sync, "quick", calibrate=lambda: next(answers), tasks=lambda: None,
                usage=lambda: None)
    assert m.attempts == 2 and not m.contended
    assert m.calibration["end"]["share"] == 1.0


def test_each_sign_of_contention_is_named():
    steady = [1e-3] * 9
    assert contention.assess(steady, QUIET, QUIET, wait=0.01) == []
    assert "queued for a CPU" in contention.assess(steady, QUIET, QUIET, wait=0.9)[0]
    # a framework queueing its own threads (XLA's pool beside the dispatching thread) is its speed
    assert contention.assess(steady, QUIET, QUIET, wait=0.9, busy=0.0) == []
    assert "other processes used 1.0 of its CPUs" in contention.assess(steady, QUIET, QUIET, wait=0.9, busy=1.0)[0]
    assert "30% of a CPU at the end" in contention.assess(steady, QUIET, dict(QUIET, share=0.3))[0]
    assert "slower at the end" in contention.assess(steady, QUIET, dict(QUIET, rate=[3e4] * 3))[0]
    assert "the median block took 3.0× the fastest" in contention.assess([1e-3] + [3e-3] * 8, QUIET, QUIET)[0]


def test_the_run_queue_account_sees_a_thread_waiting():
    before = contention.tasks()
    if before is None:
        pytest.skip("no /proc/self/task/*/schedstat here")
    assert contention.waited(before, {k: (on + 1.0, w + 0.5) for k, (on, w) in before.items()}) == \
        pytest.approx(0.5 * len(before))
    assert contention.waited(before, {"new": (1.0, 0.25)}) == pytest.approx(0.25)   # started meanwhile


def test_other_processes_cpu_time_is_a_lower_bound_from_idle_time():
    if contention.usage() is None:
        pytest.skip("no /proc/stat here")
    n, tick = len(os.sched_getaffinity(0)), os.sysconf("SC_CLK_TCK")
    # one second: the CPUs idle 0.5 s in all, this process used 0.5 s, so others used n - 1 CPUs
    assert contention.others((100.0, 1.0, 0.0, 0.0), (100.5, 1.5, 1.0, 0.0)) == pytest.approx(n - 1 - n / tick)
    assert contention.others((100.0, 1.0, 0.0, 0.0), (100.0 + n, 1.0, 1.0, 0.0)) == 0.0     # all idle: nobody
    assert contention.others(None, (1.0, 1.0, 1.0, 0.0)) is None
    # the hypervisor's other machines: steal time, less the count's resolution
    assert contention.stolen((0.0, 0.0, 0.0, 5.0), (0.0, 0.0, 2.0, 6.0)) == pytest.approx((1 - n / tick) / 2)
    assert "steal time" in contention.assess([1e-3] * 5, QUIET, QUIET, steal=0.5)[0]


def test_a_task_timed_under_contention_is_recorded_and_reported_contended(tmp_path):
    """The worker's path (observe.run) to the judge's timing records to the report, with CPU
    burners running through the task's timing."""
    pytest.importorskip("torch")
    from harness.judge import verdicts
    from harness.worker import observe
    from harness.run import inprocess
    from harness.render import timings
    from harness.define.loader import builtin_cases

    case = next(c for c in builtin_cases() if c.name == "linear_mse")
    adapter = inprocess.adapter("torch")
    task = {"dtype": "float32", "mode": "eager", "seed": 0, "fd": False, "timing": "quick", "jvp": False}
    burners = Burners()
    burners.start()
    try:
        obs, _ = observe.run(adapter, case, task)
    finally:
        burners.stop()
    row = {"case": case.name, "framework": "torch", "device": "cpu", "dtype": "float32", "mode": "eager",
           "precision": "default", "status": "ok", "task": {"fd": False, "timing": "quick"}, **obs}
    timed = [r for r in verdicts.build_records([row], {case.name: case}, tmp_path) if r["check"] == "timing"]
    assert {r["param"] for r in timed} == {"forward", "forward+backward"}
    for r in timed:
        assert r["contended"] and r["attempts"] == RETRIES["quick"] + 1, r
        assert r["message"].startswith("contended: ")
    sections = "\n".join(timings.timing_sections(timings.timing_cells(timed)))
    assert "### Contended timings" in sections and "torch eager" in sections
