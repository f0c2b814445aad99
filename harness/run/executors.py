"""Where worker groups run: here (`local`, the default: harness.run.local.Runner) or on a Ray
cluster (`--executor ray`, the optional extra `pip install 'gradharness[ray]'`).

With Ray each (framework, device, precision) worker group is split into chunks of whole cases,
balanced by estimated cost, as many in all as the cluster has CPUs (GPUs for CUDA groups) or
``--ray-chunks N``, and each chunk becomes one Ray task with one CPU (and one GPU for CUDA), so a run
uses the cluster to its width. On the node the task runs the very same worker protocol
(harness.run.local.Runner for that one chunk: a worker process, JSON lines, timeouts, crash capture;
the run's chunks on one node share a quiet room, so timings are taken one at a time with the others
stopped) in a scratch folder and
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
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

from harness.errors import HarnessError
from harness.plan.tasks import chunk_groups
from harness.run.local import ROOT, Runner, as_chunks

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


def _run_chunk_on_node(key, tasks, threads, options):
    """A Ray generator task: one chunk of a worker group through harness.run.local.Runner on this
    node, each observation yielded as it arrives (arrays as bytes), then the worker's hello, its log
    and where it ran. ``options["quiet_dir"]``: the run's quiet room on this node (under the node's
    temporary folder), shared by every chunk of the run that lands here."""
    import queue
    import socket

    framework, device, precision = key
    node_device = device
    ray_task = None
    try:
        import ray

        ray_task = ray.get_runtime_context().get_task_id()
        if device != "cpu":
            ids = ray.get_gpu_ids()
            if ids:
                node_device = f"cuda:{int(ids[0])}"   # the GPU Ray gave this task (physical index)
    except Exception:  # noqa: BLE001 - fall back to the planned index
        pass
    options = dict(options)
    options["quiet_dir"] = os.path.join(tempfile.gettempdir(), options.pop("quiet_name"))
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
                yield {"kind": "done", "hello": info, "logs": logs, "host": host, "ray_task": ray_task}
                return
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def cluster_chunks(groups: dict, costs: dict, resources: dict, parts: int | None = None) -> list:
    """The Ray tasks of a run: each worker group split into whole-case chunks (chunk_groups), as
    many in all as the cluster has CPUs for the CPU groups and GPUs for the GPU groups
    (``resources``: ray.cluster_resources()), or ``parts`` in all when given (--ray-chunks)."""
    if parts:   # asked for: that many, however small
        return chunk_groups(groups, costs, parts, min_cost=0.0)
    cpu = {k: t for k, t in groups.items() if k[1] == "cpu"}
    gpu = {k: t for k, t in groups.items() if k[1] != "cpu"}
    chunks = chunk_groups(cpu, costs, max(1, int(resources.get("CPU", 1)))) if cpu else []
    chunks += chunk_groups(gpu, costs, max(1, int(resources.get("GPU", 1)))) if gpu else []
    return sorted(chunks, key=lambda c: -c.cost)


def runner_options(settings) -> dict:
    """The executor's own Runner options from a run's settings."""
    return {"ray_chunks": settings.ray_chunks} if settings.executor == "ray" else {}


class RayRunner(Runner):
    """Runner's interface (``chunks``, ``run``, ``workers_info``, ``chunk_log``, ``stop()``), chunks
    placed on Ray: ``chunks`` splits the groups by the cluster's resources (``cluster_chunks``),
    Runner.run drives every chunk at once (one thread each, an error or interrupt in any stops them
    all; Ray queues what the cluster cannot place yet), and ``_run_chunk`` relays one Ray task."""

    starts_workers = False   # the nodes' Runners do, each node's chunks in a quiet room of its own

    def __init__(self, run_dir: Path, emit, threads: int, jobs: int = 1, ray_chunks: int | None = None, **options):
        super().__init__(run_dir, emit, threads, jobs, **options)
        self.ray_chunks = ray_chunks
        self._ray = self._remote = None
        self._refs: list = []
        self._quiet_name = f"gradharness-quiet-{secrets.token_hex(6)}"   # this run's room on each node

    def _connect(self):
        if self._ray is None:
            ray = _import_ray()
            connect(ray)
            self._ray, self._remote = ray, ray.remote(_run_chunk_on_node)
        return self._ray

    def chunks(self, groups: dict, costs: dict) -> list:
        if not groups:
            return []
        ray = self._connect()
        try:
            resources = dict(ray.cluster_resources())
        except Exception:  # noqa: BLE001 - a cluster that cannot say: one chunk a group
            resources = {}
        return cluster_chunks(groups, costs, resources, self.ray_chunks)

    def run(self, groups) -> None:
        chunks = as_chunks(groups)
        if not chunks:
            return
        self._connect()
        self.jobs = len(chunks)   # all at once: Ray queues what the cluster cannot place yet
        super().run(chunks)

    def stop(self) -> None:
        super().stop()
        if self._ray is None:
            return
        try:
            for ref in list(self._refs):
                self._ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - best effort
            pass

    @staticmethod
    def _resources(device: str) -> dict:
        """One CPU a chunk (a GPU too for a CUDA chunk): chunks follow the cluster's width, and the
        chunks on one node take their timings in its quiet room, one at a time."""
        return {"num_gpus": 1, "num_cpus": 1} if device != "cpu" else {"num_cpus": 1}

    def _run_chunk(self, chunk) -> None:
        ray = self._ray
        key, tasks = chunk.key, chunk.tasks
        by_id = {t.id: t for t in tasks}
        done: set = set()
        framework, device, _ = key
        options = {"task_timeout": self.task_timeout, "start_timeout": self.start_timeout,
                   "worker_timeout": self.worker_timeout, "memory_limit": self.memory_limit,
                   "cache_dir": self.cache_dir, "quiet_name": self._quiet_name}
        failure, where, started = None, {}, time.monotonic()
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
                    where = {"host": item.get("host"), "ray_task": item.get("ray_task")}
                    if item.get("hello"):
                        with self._lock:
                            self.workers_info[key] = {**item["hello"], "host": item.get("host")}
                    for name, data in (item.get("logs") or {}).items():
                        if name.endswith(".log"):
                            (self.run_dir / "logs" / chunk.log_name).write_bytes(data)
        except Exception as exc:  # noqa: BLE001 - a lost node or a failed Ray task: error records
            failure = f"the Ray task for {framework} {device} failed: {type(exc).__name__}: {str(exc)[:300]}"
        if self.stopping:
            return
        self._log_chunk(chunk, time.monotonic() - started, **where)
        for task in tasks:
            if task.id not in done:
                self._emit(task, {"status": "error", "reason": failure or "the Ray task ended without an answer"})


__all__ = ["EXECUTORS", "check", "cluster_chunks", "connect", "ExecutorError", "ray_available", "RayRunner",
           "runner_class", "runner_options"]
