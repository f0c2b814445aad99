"""Where worker groups run: here (`local`, the default: harness.run.local.Runner) or on a Ray
cluster (`--executor ray`, the optional extra `pip install 'gradharness[ray]'`).

With Ray each (framework, device, precision) worker group becomes one Ray task, placed with the
resources it needs (``num_gpus=1`` for a CUDA group, ``num_cpus`` = the worker's threads for a CPU
group). On the node the task runs the very same worker protocol (harness.run.local.Runner for that one
group: a worker process per framework, JSON lines, timeouts, crash capture) in a scratch folder and
streams each observation back as it finishes (a Ray generator task), with its gradient arrays as
bytes, so nodes need no shared filesystem. The driver writes them into the run folder exactly as a
local run would, so results, reports, `compare` and `merge` cannot tell the difference.

The cluster: ``RAY_ADDRESS`` if set (e.g. ``ray://head:10001`` or ``auto``), else a running local
cluster (``ray start --head``), else a fresh single-machine Ray. Every node needs this project and the
frameworks installed (the same environment as the driver). Nothing imports ray unless this executor
is chosen.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
from pathlib import Path

from harness.errors import HarnessError
from harness.run.local import ROOT, Runner, log_name

EXECUTORS = ("local", "ray")


class ExecutorError(HarnessError, RuntimeError):
    """The executor cannot be used (ray missing, no cluster reachable): one line, exit 2."""


def runner_class(name: str | None):
    """The Runner class for an executor name."""
    if name in (None, "", "local"):
        return Runner
    if name == "ray":
        return RayRunner
    raise ExecutorError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})")


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def check(name: str | None) -> None:
    """Fail early (before any run folder exists) when an executor cannot be used here."""
    runner_class(name)
    if name == "ray" and not ray_available():
        raise ExecutorError("--executor ray needs Ray: pip install 'gradharness[ray]' (or pip install ray)")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError("--executor ray needs Ray: pip install 'gradharness[ray]' (or pip install ray)") from None
    return ray


def connect(ray):
    """Connect to RAY_ADDRESS, else a running local cluster, else start a private one."""
    if ray.is_initialized():
        return
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **common)
        return
    try:
        ray.init(address="auto", **common)
        return
    except (ConnectionError, RuntimeError, ValueError):
        pass
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **common)


def _run_group_on_node(key, tasks, threads, options):
    """A Ray generator task: one worker group through harness.run.local.Runner on this node, each
    observation yielded as it arrives (arrays as bytes), then the worker's hello and log."""
    import queue
    import socket

    framework, device, precision = key
    node_device = device
    if device != "cpu":
        try:
            import ray

            ids = ray.get_gpu_ids()
            if ids:
                node_device = f"cuda:{int(ids[0])}"   # the GPU Ray gave this task (physical index)
        except Exception:  # noqa: BLE001 - fall back to the planned index
            pass
    scratch = Path(tempfile.mkdtemp(prefix="gradharness-ray-"))
    node_tasks = [dataclasses.replace(t, device=node_device) for t in tasks]
    planned = {nt.id: t.id for nt, t in zip(node_tasks, tasks)}
    out: queue.Queue = queue.Queue()
    runner = Runner(scratch, lambda task, message: out.put(("obs", planned[task.id], dict(message))),
                    threads=threads, jobs=1, **options)

    def work():
        try:
            runner.run({(framework, node_device, precision): node_tasks})
        except BaseException as exc:  # noqa: BLE001 - reported to the driver
            out.put(("failed", f"{type(exc).__name__}: {exc}"))
        finally:
            out.put(("done", None))

    threading.Thread(target=work, daemon=True).start()
    host = socket.gethostname()
    try:
        while True:
            kind, *rest = out.get()
            if kind == "obs":
                task_id, message = rest
                data = None
                if message.get("arrays"):
                    try:
                        data = (scratch / "arrays" / message["arrays"]).read_bytes()
                    except OSError:
                        data = None
                yield {"kind": "obs", "task": task_id, "message": message, "arrays": data, "host": host}
            elif kind == "failed":
                yield {"kind": "failed", "reason": rest[0], "host": host}
            else:
                info = next(iter(runner.workers_info.values()), None)
                logs = {p.name: p.read_bytes()[-2_000_000:] for p in (scratch / "logs").glob("*") if p.is_file()}
                yield {"kind": "done", "hello": info, "logs": logs, "host": host}
                return
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class RayRunner(Runner):
    """Runner's interface (``run(groups)``, ``workers_info``, ``stop()``), groups placed on Ray:
    Runner.run drives every group at once (one thread each, an error or interrupt in any stops
    them all), and ``_run_group`` relays one group's Ray task."""

    def __init__(self, run_dir: Path, emit, threads: int, jobs: int = 1, **options):
        super().__init__(run_dir, emit, threads, jobs, **options)
        self._ray = self._remote = None
        self._cpus = 1.0      # the CPUs of the cluster's largest live node
        self._refs: list = []

    def run(self, groups: dict) -> None:
        if not groups:
            return
        ray = _import_ray()
        connect(ray)
        self._ray, self._remote = ray, ray.remote(_run_group_on_node)
        try:
            self._cpus = max(float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive"))
        except Exception:  # noqa: BLE001 - no live node listed, or the listing failed: each group's
            self._cpus = 1.0  # own Ray task then fails and becomes error records, as any lost node does
        self.jobs = len(groups)   # all at once: Ray queues what the cluster cannot place yet
        super().run(groups)

    def stop(self) -> None:
        super().stop()
        if self._ray is None:
            return
        try:
            for ref in list(self._refs):
                self._ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - best effort
            pass

    def _resources(self, device: str) -> dict:
        if device != "cpu":
            return {"num_gpus": 1, "num_cpus": 1}
        return {"num_cpus": max(1.0, min(float(self.threads or 1), self._cpus))}

    def _run_group(self, key, tasks) -> None:
        ray = self._ray
        by_id = {t.id: t for t in tasks}
        done: set = set()
        framework, device, _ = key
        options = {"task_timeout": self.task_timeout, "start_timeout": self.start_timeout,
                   "worker_timeout": self.worker_timeout, "memory_limit": self.memory_limit}
        failure = None
        try:
            gen = self._remote.options(**self._resources(device)).remote(key, tasks, self.threads, options)
            self._refs.append(gen)
            for ref in gen:
                if self.stopping:
                    break
                item = ray.get(ref)
                if item["kind"] == "obs":
                    task = by_id[item["task"]]
                    message = item["message"]
                    message["id"] = task.id
                    message["host"] = item.get("host")
                    if item.get("arrays") is not None:
                        name = task.arrays_name
                        target = self.run_dir / "arrays" / name
                        tmp = target.with_name(f".{name}.tmp.{os.getpid()}")
                        tmp.write_bytes(item["arrays"])
                        os.replace(tmp, target)
                        message["arrays"] = name
                    else:
                        message.pop("arrays", None)
                    done.add(task.id)
                    self._emit(task, message)
                elif item["kind"] == "failed":
                    failure = f"the Ray task for {framework} {device} failed on {item.get('host')}: {item['reason']}"
                else:
                    if item.get("hello"):
                        with self._lock:
                            self.workers_info[key] = {**item["hello"], "host": item.get("host")}
                    for name, data in (item.get("logs") or {}).items():
                        if name.endswith(".log"):
                            (self.run_dir / "logs" / log_name(key)).write_bytes(data)
        except Exception as exc:  # noqa: BLE001 - a lost node or a failed Ray task: error records
            failure = f"the Ray task for {framework} {device} failed: {type(exc).__name__}: {str(exc)[:300]}"
        if self.stopping:
            return
        for task in tasks:
            if task.id not in done:
                self._emit(task, {"status": "error", "reason": failure or "the Ray task ended without an answer"})


__all__ = ["EXECUTORS", "check", "connect", "ExecutorError", "ray_available", "RayRunner", "runner_class"]
