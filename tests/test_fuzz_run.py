"""`harness fuzz` end to end, on a user's ops file with two planted differences: `cube`, whose torch
custom gradient is wrong (2x^2 for 3x^2), must come out as a finding minimised to that op alone,
with a repro script that reproduces it; `kink`, a relu whose torch subgradient at 0 is 1 (jax's is
0), differs only at the non-differentiable point and must never be a finding."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import harness

OPS_FILE = '''
import numpy as np


def _torch_cube(x):
    import torch

    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 2.0 * x * x      # planted: the derivative is 3 x^2

    return Cube.apply(x)


def _torch_kink(x):
    import torch

    class Kink(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.relu(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * (x >= 0).to(g.dtype)   # subgradient 1 at 0

    return Kink.apply(x)


def _jax_kink(x):
    import jax

    return jax.nn.relu(x)


FUZZ_OPS = [
    {"name": "cube", "numpy": lambda x: x * x * x, "torch": _torch_cube, "jax": lambda x: x * x * x, "weight": 2.0},
    {"name": "kink", "numpy": lambda x: np.maximum(x, 0.0), "torch": _torch_kink, "jax": _jax_kink,
     "smooth": False, "weight": 2.0},
]
'''


def _installed(*names):
    return all(importlib.util.find_spec(n) is not None for n in names)


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    if not _installed("torch", "jax"):
        pytest.skip("needs torch and jax")
    root = tmp_path_factory.mktemp("fuzz")
    (root / "my_ops.py").write_text(OPS_FILE)
    out = root / "out"
    proc = harness("fuzz", "--budget", "80s", "--frameworks", "torch,jax", "--dtypes", "float64", "--modes", "eager",
                   "--ops", "cube,kink,sin,exp,mul,sum,tanh", "--extra-ops", root / "my_ops.py", "--max-ops", "4",
                   "--round-size", "16", "--seed", "0", "--out", out, "--quiet", timeout=600)
    rows = [json.loads(line) for line in (out / "findings.jsonl").read_text().splitlines()] \
        if (out / "findings.jsonl").exists() else []
    return proc, out, rows


def test_the_planted_custom_gradient_is_found_and_minimised_to_its_op(fuzz_run):
    proc, out, rows = fuzz_run
    assert proc.returncode == 1, proc.stderr
    fd = [r for r in rows if r["check"] == "fd" and r["framework"] == "torch"]
    assert fd, [(r["check"], r["framework"], r["ops"]) for r in rows]
    assert fd[0]["ops"] == ["cube"] and fd[0]["size"][0] == 1, fd[0]["text"]
    assert fd[0]["cause"] == "ad-bug"
    report = (out / "fuzz.md").read_text()
    assert fd[0]["id"] in report and "programs per minute" in report


def test_every_finding_reproduces_in_its_standalone_scripts_and_its_case_file(fuzz_run):
    _, _, rows = fuzz_run
    assert rows
    for row in rows:
        assert row["scripts"], row["id"]
        for framework, path in row["scripts"].items():
            text = open(path).read()
            assert "import harness" not in text and "from harness" not in text
            done = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=300)
            assert done.returncode == 1, (row["id"], framework, done.stdout[-2000:], done.stderr[-2000:])
            assert "REPRODUCES" in done.stdout
    first = rows[0]
    again = harness(*first["run"].split()[3:], "--quiet", "--out", str(first["case_file"]).replace("cases.py", "rerun"))
    assert again.returncode == 1, again.stderr


def test_a_difference_only_at_the_kink_is_never_a_finding(fuzz_run):
    _, _, rows = fuzz_run
    assert not [r for r in rows if "cube" not in r["ops"]], [(r["check"], r["text"]) for r in rows]


def test_repro_writes_standalone_scripts_for_a_divergence_of_an_ordinary_run(tmp_path):
    if not _installed("torch", "jax"):
        pytest.skip("needs torch and jax")
    run = tmp_path / "run"
    done = harness("run", "--cases", "op_max_ties", "--frameworks", "torch,jax", "--dtypes", "float64",
                   "--timing", "off", "--out", run, "--quiet")
    assert done.returncode in (0, 1), done.stderr
    made = harness("repro", run, "--case", "op_max_ties", "--out", tmp_path / "repro")
    assert made.returncode == 0, made.stderr
    scripts = sorted((tmp_path / "repro").glob("repro_*.py"))
    assert [p.name for p in scripts] == ["repro_jax.py", "repro_torch.py"]
    for path in scripts:
        out = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=300)
        assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    missing = harness("repro", run, "--case", "no_such_case")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_a_job_limit_stops_the_fuzzer_cleanly_and_keeps_what_it_wrote(tmp_path, signame):
    """Ctrl-C, or SIGTERM from a CI job's time limit (or `timeout`): fuzz.md says Interrupted, the
    findings so far are written, the workers are gone, exit 128 + the signal."""
    import signal
    import time

    from tests.helpers import ROOT

    if not _installed("torch"):
        pytest.skip("needs torch")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "fuzz", "--budget", "5m", "--frameworks", "torch",
                             "--dtypes", "float64", "--modes", "eager", "--out", str(out), "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def worker_pids():
        return [int(m) for log in out.glob("batches/*/run/logs/*.log") for m in re.findall(r"pid (\d+)", log.read_text())]

    deadline = time.monotonic() + 120
    while not worker_pids() and time.monotonic() < deadline:   # a worker is running
        time.sleep(0.5)
    sig = getattr(signal, signame)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr[-2000:]
    assert "Interrupted" in (out / "fuzz.md").read_text()
    assert (out / "findings.jsonl").exists() and "Traceback" not in stderr
    # the workers (each in its own session, which `timeout` would not reach) were killed with it
    pids = worker_pids()
    assert pids
    deadline = time.monotonic() + 15
    while [p for p in pids if _alive(p)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie is dead: it only waits to be reaped
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_fuzzing_on_a_gpu_a_framework_cannot_use_says_so_and_still_finds_on_the_cpu(tmp_path):
    """`--devices cpu,cuda:0` where torch is a CPU build (a fake nvidia-smi lists a GPU): the CPU
    finding is still found, and every cuda:0 task torch could not run is named with torch's reason
    in fuzz.md and fuzz.json (never silently dropped). An absent device is one line, exit 2."""
    from tests.helpers import fake_gpu_env

    if not _installed("torch"):
        pytest.skip("needs torch")
    env = fake_gpu_env(tmp_path / "bin")
    if env is None:
        pytest.skip("a real nvidia-smi is on PATH")
    (tmp_path / "my_ops.py").write_text(OPS_FILE)
    out = tmp_path / "out"
    proc = harness("fuzz", "--budget", "40s", "--frameworks", "torch", "--devices", "cpu,cuda:0", "--dtypes",
                   "float64", "--modes", "eager", "--ops", "cube,sin,mul,sum", "--extra-ops", tmp_path / "my_ops.py",
                   "--max-ops", "3", "--round-size", "8", "--out", out, "--quiet", env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "findings.jsonl").read_text().splitlines()]
    assert any(r["check"] == "fd" and r["ops"] == ["cube"] and r["device"] == "cpu" for r in rows), rows
    summary = json.loads((out / "fuzz.json").read_text())
    assert summary["settings"]["devices"] == ["cpu", "cuda:0"]
    assert [(g["framework"], g["device"], g["reason"]) for g in summary["not_run"]] == \
        [("torch", "cuda:0", "this torch build sees no CUDA device")]
    report = (out / "fuzz.md").read_text()
    assert "devices cpu, cuda:0" in report and "**Not run**" in report
    assert "| torch       | cuda:0   |" in report
    absent = harness("fuzz", "--budget", "10s", "--devices", "cuda:1", "--out", tmp_path / "none", env=env)
    assert absent.returncode == 2 and absent.stderr.count("\n") == 1, absent.stderr
    assert "cuda:1" in absent.stderr and not (tmp_path / "none").exists()
