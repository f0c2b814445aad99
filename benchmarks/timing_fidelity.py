"""Timing fidelity: the harness's median vs each framework's own measurement, same run.

An MLP forward+backward (float32) on every installed framework:
  torch eager        vs torch.utils.benchmark.Timer(...).blocked_autorange
  jax jit-compiled   vs a loop of jitted calls, each ended by block_until_ready
  tensorflow eager   vs a loop that materialises the results
The harness side is exactly what a worker runs (adapter callables, harness.worker.timing.measure, "full":
blocked autorange bracketed by the contention probes, a contended measurement taken again); the
framework's own tool runs inside the same probes (harness.worker.contention.Watch). A round in which
either side was contended is left out of the deviation (a figure from a contended machine is not
a fidelity figure); with fewer than MIN_QUIET quiet rounds every round counts and the line says so:
rerun on a quiet machine.
The two methods run in ROUNDS paired rounds, the order alternating; the deviation is the median
of the paired ratios, so drift of a shared machine between rounds cancels.
Last line: max_deviation_pct=<x> (target <= 5, CPU and GPU).

The MLP is sized so that one call keeps the device busy for milliseconds (512 wide, batch 256
on CPU; 4096 and 4096 on a GPU). At microseconds a per-call sync loop (JAX's recipe) measures
dispatch latency, which torch's Timer and the harness amortise over a block of calls: two
different quantities, so no fidelity figure could be read from them.

    python benchmarks/timing_fidelity.py [--device cpu|cuda] [--frameworks torch,jax] [--width W --batch B]
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapters import FRAMEWORKS, load  # noqa: E402
from adapters.base import Unsupported  # noqa: E402
from harness import Case  # noqa: E402
from harness.worker import observe  # noqa: E402
from harness.worker.contention import Watch  # noqa: E402
from harness.worker.timing import PRESETS, measure  # noqa: E402

#: (width, batch) per device: milliseconds per call on each
SIZES = {"cpu": (512, 256), "cuda": (4096, 4096)}
ROUNDS = 10
#: quiet rounds needed for the deviation to leave the contended ones out
MIN_QUIET = 3


def mlp_case(width, batch):
    def make(rng):
        return ({"w1": rng.standard_normal((width, width)) / np.sqrt(width), "b1": np.zeros(width),
                 "w2": rng.standard_normal((width, width)) / np.sqrt(width), "b2": np.zeros(width)},
                {"x": rng.standard_normal((batch, width)), "y": rng.standard_normal((batch, width))})

    def loss(ops, p, i):
        h = ops.tanh(ops.add(ops.matmul(i["x"], p["w1"]), p["b1"]))
        return ops.mse(ops.add(ops.matmul(h, p["w2"]), p["b2"]), i["y"])

    return Case(name=f"mlp_timing_{width}x{batch}", make=make, loss=loss)


def independent(framework, call, min_run_time):
    """The framework's own way of timing the same callable: seconds per call (median)."""
    if framework == "torch":
        import torch
        from torch.utils.benchmark import Timer
        # Timer defaults to one thread: give it the threads the harness's worker runs with
        timer = Timer(stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads())
        return timer.blocked_autorange(min_run_time=min_run_time).median
    times = []
    end = time.perf_counter() + min_run_time
    if framework == "jax":
        import jax
        while time.perf_counter() < end or len(times) < 20:
            start = time.perf_counter()
            jax.block_until_ready(call())
            times.append(time.perf_counter() - start)
    else:
        import tensorflow as tf
        while time.perf_counter() < end or len(times) < 20:
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), call())
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_framework(framework, device, case, harness_preset="full"):
    adapter = load(framework)
    adapter.setup(device, threads=0, precision="default")
    compiled = framework == "jax"   # JAX's own tool times jitted functions
    problem = observe.Problem(adapter, case, "float32", seed=0)
    call = adapter.grad_fn(problem.f, compiled)
    xs = problem.xs
    adapter.sync(call(*xs))
    preset = PRESETS["full"]

    contended = []

    def harness_median():
        m = measure(lambda: call(*xs), adapter.sync, harness_preset)
        contended[-1] |= m.contended
        return m.median

    def own_tool_median():
        with Watch() as watch:
            median = independent(framework, lambda: call(*xs), preset["min_run_time"])
        contended[-1] |= bool(watch.assess([median]))
        return median

    rounds = []
    for i in range(ROUNDS):
        contended.append(False)
        # paired, the order alternating, so the machine's drift hits both methods alike
        if i % 2 == 0:
            ours = harness_median()
            theirs = own_tool_median()
        else:
            theirs = own_tool_median()
            ours = harness_median()
        rounds.append((ours, theirs))
    ours, theirs = (float(np.median(v)) for v in zip(*rounds))
    ratios = [a / b for a, b in rounds]
    return ours, theirs, ratios, ("jit" if compiled else "eager"), adapter.device_name(), contended


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--frameworks", default=",".join(fw for fw, i in FRAMEWORKS.items() if i.installed()))
    parser.add_argument("--width", type=int, help="MLP width (default: by device, see SIZES)")
    parser.add_argument("--batch", type=int, help="batch size (default: by device)")
    parser.add_argument("--preset", default="full", choices=tuple(PRESETS),
                        help="the harness's --timing preset under test (the frameworks' own tools always run "
                             "the full preset's time)")
    args = parser.parse_args()
    width, batch = SIZES[args.device]
    case = mlp_case(args.width or width, args.batch or batch)
    print(f"{case.name}, float32 forward+backward, harness --timing {args.preset} against the frameworks' own "
          f"tools at {PRESETS['full']['min_run_time']:g} s per round")
    worst, missed = 0.0, []
    for fw in args.frameworks.split(","):
        if args.device == "cpu":
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
        try:
            ours, theirs, ratios, mode, name, contended = measure_framework(fw, args.device, case, args.preset)
        except Unsupported as exc:   # e.g. a CPU-only build on a GPU machine: said, and the others measured
            print(f"{fw:<10} not measured on {args.device}: {exc}")
            missed.append(fw)
            continue
        quiet = [r for r, c in zip(ratios, contended) if not c]
        used = quiet if len(quiet) >= MIN_QUIET else ratios
        deviation = abs(float(np.median(used)) - 1) * 100   # the median of the paired ratios
        q1, q3 = np.percentile(used, [25, 75])
        worst = max(worst, deviation)
        which = (f"{len(quiet)} quiet paired rounds of {ROUNDS}" if used is quiet else
                 f"all {ROUNDS} paired rounds: only {len(quiet)} quiet, not a fidelity figure, rerun on a quiet machine")
        print(f"{fw:<10} {mode:<5} on {name}: harness {ours * 1e3:.3f} ms, own tool {theirs * 1e3:.3f} ms, "
              f"deviation {deviation:.1f}% (median over {which}; their ratios' IQR {q1:.3f}-{q3:.3f})")
    measured = len(args.frameworks.split(",")) - len(missed)
    print(f"max_deviation_pct={worst if measured else float('nan'):.1f}"
          + (f" (not measured: {', '.join(missed)})" if missed else ""))


if __name__ == "__main__":
    main()
