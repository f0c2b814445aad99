"""Timing fidelity: the harness's median vs each framework's own measurement, same run.

An MLP forward+backward (float32) on every installed framework:
  torch eager        vs torch.utils.benchmark.Timer(...).blocked_autorange
  jax jit-compiled   vs a loop of jitted calls, each ended by block_until_ready
  tensorflow eager   vs a loop that materialises the results
The harness side is exactly what a worker runs (adapter callables, harness.timing, "full").
Last line: max_deviation_pct=<x> (target <= 5, CPU and GPU).

    python benchmarks/timing_fidelity.py [--device cpu|cuda] [--frameworks torch,jax]
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapters import FRAMEWORKS, load  # noqa: E402
from harness import Case, execute  # noqa: E402
from harness.timing import PRESETS, blocked_autorange  # noqa: E402

WIDTH, BATCH = 512, 256


def make(rng):
    return ({"w1": rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH), "b1": np.zeros(WIDTH),
             "w2": rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH), "b2": np.zeros(WIDTH)},
            {"x": rng.standard_normal((BATCH, WIDTH)), "y": rng.standard_normal((BATCH, WIDTH))})


def loss(ops, p, i):
    h = ops.tanh(ops.add(ops.matmul(i["x"], p["w1"]), p["b1"]))
    return ops.mse(ops.add(ops.matmul(h, p["w2"]), p["b2"]), i["y"])


CASE = Case(name="mlp_timing", make=make, loss=loss)


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


def measure(framework, device):
    adapter = load(framework)
    adapter.setup(device, threads=0, precision="default")
    compiled = framework == "jax"   # JAX's own tool times jitted functions
    problem = execute.Problem(adapter, CASE, "float32", seed=0)
    call = adapter.grad_fn(problem.f, compiled)
    xs = problem.xs
    adapter.sync(call(*xs))
    preset = PRESETS["full"]
    rounds = []
    for _ in range(3):   # interleave the two methods so drift hits both alike
        ours = blocked_autorange(lambda: call(*xs), adapter.sync, **preset).median
        theirs = independent(framework, lambda: call(*xs), preset["min_run_time"])
        rounds.append((ours, theirs))
    ours, theirs = (float(np.median(v)) for v in zip(*rounds))
    return ours, theirs, ("jit" if compiled else "eager"), adapter.device_name()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--frameworks", default=",".join(fw for fw, i in FRAMEWORKS.items() if i.installed()))
    args = parser.parse_args()
    worst = 0.0
    for fw in args.frameworks.split(","):
        if args.device == "cpu":
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
        ours, theirs, mode, name = measure(fw, args.device)
        deviation = abs(ours - theirs) / theirs * 100
        worst = max(worst, deviation)
        print(f"{fw:<10} {mode:<5} on {name}: harness {ours * 1e3:.3f} ms, own tool {theirs * 1e3:.3f} ms, "
              f"deviation {deviation:.1f}%")
    print(f"max_deviation_pct={worst:.1f}")


if __name__ == "__main__":
    main()
