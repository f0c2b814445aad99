"""Running the CLI as a user does: a subprocess from the project root."""
import atexit
import copy
import json
import os
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


#: the compilation cache of every run the tests start (never the user's ~/.cache/gradharness), shared
#: by the session's runs: what one compiled the next loads, as in a user's second run
TEST_CACHE = tempfile.mkdtemp(prefix="gradharness-test-cache-")
atexit.register(shutil.rmtree, TEST_CACHE, True)


def harness_env(**extra) -> dict:
    """The environment of a harness subprocess started by a test (this process's is left alone): the
    test cache, and no GitHub job summary (tests run under Actions must not write to the job's page)."""
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    # a Ray a test starts (a private one, or `ray start` in test_ray_cluster) and its clients agree on
    # no auth token (Ray >= 2.5x turns token auth on once ~/.ray/auth_token exists) and send no stats
    ray = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    return {**env, **ray, "GRADHARNESS_CACHE_DIR": TEST_CACHE, **extra}


def fake_gpu_env(folder) -> dict:
    """harness_env() with an `nvidia-smi` first on PATH that lists one H100: the harness plans
    cuda:0 tasks, which the frameworks here (CPU builds) cannot run. None on a machine with a real
    nvidia-smi, where the frameworks may see a real GPU."""
    if shutil.which("nvidia-smi"):
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-test)'\n")
    smi.chmod(0o755)
    env = harness_env()
    return {**env, "PATH": f"{folder}{os.pathsep}{env.get('PATH', '')}"}


def harness(*args, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env or harness_env())


def results(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "results.jsonl").read_text().splitlines()]


GOLDEN = ROOT / "tests" / "data" / "golden"


def find(records, **match):
    """The one record whose fields equal ``match``."""
    hits = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, match
    return hits[0]


def planted_runs():
    """(old, new) records from the golden results for `compare`: one timing cell with steady raw
    times, 50% slower in new; one pairwise error grown past its tolerance; one fd verdict flipped."""
    base = [json.loads(line) for line in (GOLDEN / "results.jsonl").read_text().splitlines()]
    steady = [1e-3 * (1 + 0.01 * (i % 5)) for i in range(15)]
    old = copy.deepcopy(base)
    cell = dict(case="linear_mse", framework="torch", dtype="float32", check="timing", param="forward+backward")
    find(old, **cell)["times"] = steady
    new = copy.deepcopy(old)
    find(new, **cell)["times"] = [t * 1.5 for t in steady]
    moved = find(new, case="linear_mse", check="pairwise", dtype="float32", param="weight")
    moved["max_rel_err"] = float(moved["max_rel_err"]) + 10 * (moved["atol"] + moved["rtol"])
    find(new, case="op_max_ties", check="fd", framework="jax", param="x").update(verdict="diverge", cause="ad-bug")
    return old, new
