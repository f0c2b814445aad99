"""The Ray executor on a real cluster: `ray start --head` with several CPUs (and a second, worker
node where the machine allows), RAY_ADDRESS pointing at it, a run split into Ray tasks of whole
cases whose records equal the local executor's. The cluster is stopped whatever happens."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import FRAMEWORKS
from tests.helpers import harness, harness_env, results

pytestmark = [
    pytest.mark.skipif(not __import__("importlib").util.find_spec("ray"), reason="ray not installed (extra 'ray')"),
    pytest.mark.skipif(not (FRAMEWORKS["torch"].installed() and FRAMEWORKS["jax"].installed()),
                       reason="needs torch and jax"),
]

CASES = "op_exp,op_tanh,op_sin,op_log,op_sigmoid,op_softplus,op_abs,op_max_ties"
SELECTION = ("--cases", CASES, "--frameworks", "torch,jax", "--dtypes", "float64", "--timing", "off",
             "--fail-on", "error", "--quiet")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else shutil.which("ray") or "ray"


@pytest.fixture(scope="module")
def cluster():
    """A head node with 4 CPUs in a process group of its own (`ray start --block`), so the
    teardown can end it and everything it started, and nothing else on the machine."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")   # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    env = harness_env()
    head = subprocess.Popen([_ray_cli(), "start", "--head", "--block", f"--port={port}", "--num-cpus=4",
                             "--num-gpus=0", f"--temp-dir={temp}", "--include-dashboard=false",
                             "--disable-usage-stats", "--node-ip-address=127.0.0.1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start failed: {head.stderr.read()[-2000:]}")
            probe = subprocess.run([_ray_cli(), "status", f"--address={address}"], env=env,
                                   capture_output=True, text=True, timeout=60)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not come up: {probe.stderr[-1000:]}")
            time.sleep(1)
        yield address
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # raylet and gcs may have left the group: anything still running from this session's folder
        subprocess.run(["pkill", "-9", "-f", temp], check=False)
        shutil.rmtree(temp, ignore_errors=True)


def _comparable(recs):
    return sorted(json.dumps({k: v for k, v in r.items() if k != "run_id"}, sort_keys=True) for r in recs)


def test_ray_chunks_on_a_real_cluster_equal_the_local_run(cluster, tmp_path):
    local = tmp_path / "local"
    proc = harness("run", *SELECTION, "--out", local, "--jobs", "1")
    assert proc.returncode == 0, proc.stderr

    out = tmp_path / "ray"
    proc = harness("run", *SELECTION, "--out", out, "--executor", "ray", "--ray-chunks", "8",
                   env=harness_env(RAY_ADDRESS=cluster))
    assert proc.returncode == 0, proc.stderr
    # pairwise checks are judged in the driver over every chunk's observations: the same records
    assert _comparable(results(out)) == _comparable(results(local))
    meta = json.loads((out / "run.json").read_text())
    assert meta["executor"] == "ray"
    chunks = meta["chunks"]
    for framework in ("torch", "jax"):
        mine = [c for c in chunks if c["framework"] == framework]
        assert len(mine) > 1, chunks                                   # more than one Ray task each
        assert len({c["ray_task"] for c in mine}) == len(mine)
        assert sum(c["cases"] for c in mine) == len(CASES.split(","))  # whole cases, each once
    assert sum(len(c["ray_task"] or "") > 0 for c in chunks) == len(chunks) == 8
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert "jax-cpu-default.log" in logs and "jax-cpu-default.2.log" in logs


def test_ray_default_chunks_follow_the_clusters_cpus(cluster, tmp_path):
    """Without --ray-chunks the run asks the cluster: 4 CPUs, so at most 4 Ray tasks for the CPU
    groups (fewer where a group's work is too small to be worth a framework start)."""
    out = tmp_path / "ray"
    proc = harness("run", "--cases", "linear_mse,op_exp", "--frameworks", "torch,jax", "--dtypes", "float64",
                   "--timing", "off", "--quiet", "--out", out, "--executor", "ray",
                   env=harness_env(RAY_ADDRESS=cluster))
    assert proc.returncode == 0, proc.stderr
    chunks = json.loads((out / "run.json").read_text())["chunks"]
    assert 2 <= len(chunks) <= 4 and {c["framework"] for c in chunks} == {"torch", "jax"}
