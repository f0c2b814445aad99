"""Timing: syncs asynchronous work, keeps the first call apart, records policy and fields."""
import time

import pytest

from harness.timing import PRESETS, blocked_autorange
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
        for key in ("median_s", "iqr_s", "times", "block", "first_call_s", "noisy", "threads", "policy"):
            assert key in r, key
        assert r["median_s"] > 0 and len(r["times"]) >= 5
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
