"""How `--executor ray` splits a run over a 1-, 2- and 8-CPU local Ray cluster.

    python benchmarks/ray_scaling.py [--cpus 1,2,8] [--cases SPEC]

For each size a real head node is started (`ray start --head --block --num-cpus N`, in a process
group of its own, stopped afterwards whatever happens), the same run is made on it with
`RAY_ADDRESS` set and no `--ray-chunks` (so the chunk count is the cluster's own choice), and its
run.json is read: how many Ray tasks ran per framework, and their balance, as max / mean of the
estimated cost and of the measured seconds per task (float64, no timing: the checks only). Records must equal across sizes: the driver
judges every chunk's observations together. On a machine with fewer cores than a cluster's CPUs
the tasks share the cores (the count and balance are the point, not the wall time).
Last line: `ray_tasks=` per size.
"""
from __future__ import annotations

import argparse
import collections
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

ROOT = Path(__file__).resolve().parents[1]
#: the elementwise and activation op cases (59): enough work per framework to be worth splitting
CASES = "elementwise,activation"


def _ray() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else shutil.which("ray") or "ray"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head(cpus: int, env: dict):
    """Start a head node; returns (process, address, temp folder)."""
    temp = tempfile.mkdtemp(prefix="rs", dir="/tmp")
    port = _port()
    proc = subprocess.Popen([_ray(), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
                             "--num-gpus=0", f"--temp-dir={temp}", "--include-dashboard=false",
                             "--disable-usage-stats", "--node-ip-address=127.0.0.1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while subprocess.run([_ray(), "status", f"--address={address}"], env=env, capture_output=True).returncode:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc, temp)
            sys.exit(f"ray start --num-cpus={cpus} failed: {proc.stderr.read()[-1500:] if proc.stderr else ''}")
        time.sleep(1)
    return proc, address, temp


def stop(proc, temp) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)
            break
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    subprocess.run(["pkill", "-9", "-f", temp], check=False)
    shutil.rmtree(temp, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", default="1,2,8", help="cluster sizes (default 1,2,8)")
    parser.add_argument("--cases", default=CASES)
    args = parser.parse_args(argv)
    # the head and its clients agree on no auth token (newer Ray turns it on once ~/.ray/auth_token exists)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    work = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    counts, reference = {}, None
    try:
        for cpus in (int(c) for c in args.cpus.split(",")):
            proc, address, temp = head(cpus, env)
            try:
                out = work / f"cpus{cpus}"
                started = time.perf_counter()
                run = subprocess.run([sys.executable, "-m", "harness", "run", "--cases", args.cases, "--frameworks",
                                      "torch,jax,tensorflow", "--dtypes", "float64", "--timing", "off",
                                      "--executor", "ray", "--out", str(out), "--quiet", "--fail-on", "none"],
                                     cwd=ROOT, env={**env, "RAY_ADDRESS": address}, capture_output=True, text=True)
                wall = time.perf_counter() - started
            finally:
                stop(proc, temp)
            if run.returncode != 0:
                sys.exit(f"the run on {cpus} CPUs failed: {run.stderr[-2000:]}")
            chunks = json.loads((out / "run.json").read_text())["chunks"]
            records = sorted(line for line in (out / "results.jsonl").read_text().splitlines()
                             if '"check": "timing"' not in line)
            records = [json.dumps({k: v for k, v in json.loads(r).items() if k != "run_id"}, sort_keys=True)
                       for r in records]
            same = "same records as the first size" if reference in (None, sorted(records)) else "RECORDS DIFFER"
            reference = reference or sorted(records)
            by_fw = collections.defaultdict(list)
            for c in chunks:
                by_fw[c["framework"]].append(c)
            counts[cpus] = len(chunks)
            print(f"{cpus} CPU(s): {len(chunks)} Ray tasks, {wall:.0f} s wall, {same}")
            for fw, mine in sorted(by_fw.items()):
                cost = [c["cost"] for c in mine]
                secs = [c["seconds"] for c in mine]
                print(f"  {fw:10s} {len(mine)} task(s), cases {[c['cases'] for c in mine]}, "
                      f"cost max/mean {max(cost) / (sum(cost) / len(cost)):.2f}, "
                      f"seconds {', '.join(f'{s:.1f}' for s in secs)} (max/mean {max(secs) / (sum(secs) / len(secs)):.2f})")
        print("ray_tasks=" + ",".join(f"{c}cpu:{n}" for c, n in counts.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
