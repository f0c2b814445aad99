"""Faults the harness must survive (issue 7): each is injected, and each must become a clear
record (or one line and an exit code) while the rest of the run finishes and nothing finished
is lost. Most runs use torch alone, float64, timing off, to stay fast.

  1 worker segfault / abort              6 framework not installed / fails to import
  2 hang: per-task and per-worker timeout 7 bad usage: one line, exit 2, nothing written
  3 raise in make / loss / autodiff       8 interrupted run (SIGINT, SIGTERM, SIGKILL) + --resume
  4 non-scalar, int/complex, NaN/inf loss 9 unwritable output folder, disk full mid-run
  5 out of memory (--memory-limit)        10 two runs into one reports/ folder at once
plus determinism (bitwise gradients run to run) and safety (no pickle, no writes outside the
output folder, no global randomness in the built-in cases).
"""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from adapters import FRAMEWORKS
from tests.helpers import ROOT, fake_gpu_env, harness, harness_env, results

needs_torch = pytest.mark.skipif(not FRAMEWORKS["torch"].installed(), reason="torch not installed")
FAST = ("--frameworks", "torch", "--dtypes", "float64", "--timing", "off")

COMMON = textwrap.dedent('''
    import os, subprocess, sys, time
    import numpy as np
    from harness import Case

    def make(rng):
        return {"w": rng.normal(size=(3,))}, {"x": rng.normal(size=(3,))}

    def ok(ops, p, i):
        return ops.sum(ops.tanh(ops.mul(p["w"], i["x"])))

    def hang(p, i):
        """Starts a child (it must die with the worker), notes both pids, sleeps forever."""
        child = subprocess.Popen(["sleep", "1000"])
        with open(os.environ["FAULT_PIDS"], "a") as fh:
            fh.write(f"{os.getpid()} {child.pid}\\n")
        time.sleep(1000)
''')

FAULTS = COMMON + textwrap.dedent('''
    def boom_make(rng):
        raise ValueError("make exploded")

    def t_abort(p, i):
        os.abort()

    def t_segv(p, i):
        import ctypes
        ctypes.string_at(0)

    def t_killed(p, i):        # what the kernel's OOM killer does
        import signal
        os.kill(os.getpid(), signal.SIGKILL)

    def t_raise(p, i):
        raise RuntimeError("loss exploded")

    def t_autodiff(p, i):
        import torch

        class Bad(torch.autograd.Function):
            @staticmethod
            def forward(ctx, w):
                return w * 2

            @staticmethod
            def backward(ctx, g):
                raise RuntimeError("backward exploded")
        return torch.sum(Bad.apply(p["w"]) * i["x"])

    def t_vector(p, i):
        return p["w"] * i["x"]

    def t_int(p, i):
        import torch
        return torch.sum(p["w"] * i["x"]).to(torch.int64)

    def t_complex(p, i):
        import torch
        return torch.sum(p["w"] * i["x"]).to(torch.complex128)

    def t_nan(p, i):
        import torch
        return torch.sum(p["w"] * i["x"]) * float("nan")

    def t_inf(p, i):
        import torch
        return torch.sum(p["w"] * i["x"]) + float("inf")

    # 6 GiB of address space: refused under --memory-limit 3G; without the limit np.empty and
    # torch.empty only reserve it (pages never touched), so the test is safe either way
    def t_oom_numpy(p, i):
        a = np.empty(6 * 2**30, dtype=np.uint8)
        return float(a[:1].sum())

    def t_oom_torch(p, i):
        import torch
        a = torch.empty(6 * 2**30, dtype=torch.uint8)
        return a[:1].sum()

    CASES = [Case(name="a_ok_first", make=make, loss=ok),
             Case(name="b_make", make=boom_make, loss=ok)]
    CASES += [Case(name=name, make=make, native={"torch": fn}) for name, fn in [
        ("c_abort", t_abort), ("d_segv", t_segv), ("d_killed", t_killed), ("e_raise", t_raise), ("f_autodiff", t_autodiff),
        ("g_vector", t_vector), ("h_int", t_int), ("i_complex", t_complex), ("j_nan", t_nan),
        ("k_inf", t_inf), ("l_oom_numpy", t_oom_numpy), ("m_oom_torch", t_oom_torch)]]
    CASES.append(Case(name="z_ok_last", make=make, loss=ok))
''')

HANGS = COMMON + textwrap.dedent('''
    CASES = [Case(name="a_ok_first", make=make, loss=ok),
             Case(name="b_hang", make=make, native={"torch": hang}),
             Case(name="c_ok_last", make=make, loss=ok)]
''')

# hangs only while the marker file exists: an interrupted run is resumed after removing it
RESUMABLE = COMMON + textwrap.dedent('''
    def maybe_hang(p, i):
        import torch
        if os.path.exists(os.environ["FAULT_MARKER"]):
            hang(p, i)
        return torch.sum(torch.sin(p["w"] * i["x"]))

    CASES = [Case(name="a_first", make=make, loss=ok),
             Case(name="b_maybe_hang", make=make, native={"torch": maybe_hang}),
             Case(name="c_last", make=make, loss=ok)]
''')


def _env(**extra):
    return harness_env(**{k: str(v) for k, v in extra.items()})


def _start(*args, cwd=ROOT, env=None):
    """The CLI as a background process (the same command tests.helpers.harness runs).

    Ctrl-C's handler is installed explicitly in the child: when the test runner itself was
    started in the background by a non-interactive shell (as CI may be), SIGINT arrives ignored,
    Python then keeps it ignored, and the run could not be interrupted the way a user's Ctrl-C
    does. (Done in the child's own code, not a preexec_fn: forking a process that has JAX's
    threads and running Python before exec can deadlock.)"""
    return subprocess.Popen([sys.executable, "-c", _CTRL_C_THEN_CLI, *map(str, args)], cwd=cwd, env=env or harness_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


_CTRL_C_THEN_CLI = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "from harness.cli.main import main; sys.exit(main(sys.argv[1:]))")


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _runs(recs, check="run"):
    return {r["case"]: r for r in recs if r["check"] == check}


def _dead(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (it no longer runs)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _error_rows(report: str) -> list:
    """The table rows of the report's 'Errors and skipped' section (pipes in cells unescaped)."""
    section = report.split("## Errors and skipped", 1)[1].split("\n## ", 1)[0]
    return [line.replace("\\|", "|") for line in section.splitlines() if line.startswith("|")]


def _reported(report: str, case: str, reason: str) -> bool:
    """Does the report have an error row for ``case`` whose reason starts with ``reason``?"""
    return any(f" {case} " in row and f"| {reason[:80]}" in row and "error" in row for row in _error_rows(report))


# ---- 1, 3, 4, 5: crashes, exceptions, bad losses, out of memory ---------------------------------
@needs_torch
def test_crash_exception_bad_loss_and_oom_each_become_one_error_row(tmp_path):
    cases = tmp_path / "faults.py"
    cases.write_text(FAULTS)
    out = tmp_path / "run"
    proc = harness("run", "--cases", cases, *FAST, "--memory-limit", "3G", "--out", out)
    assert proc.returncode == 1, proc.stderr
    runs = _runs(results(out))
    expected = {
        "b_make": "ValueError: make exploded",
        "c_abort": "worker crashed (SIGABRT): Fatal Python error: Aborted in t_abort (faults.py:",
        "d_segv": "worker crashed (SIGSEGV): Fatal Python error: Segmentation fault in string_at",
        "d_killed": "worker killed (SIGKILL) from outside the harness, most likely out of memory",
        "e_raise": "RuntimeError: loss exploded",
        "f_autodiff": "AutodiffError: through the case's custom gradient (autograd.Function t_autodiff.<locals>.Bad): "
                      "RuntimeError: backward exploded",
        "g_vector": "ScalarError: loss must return a scalar, got shape (3,)",
        "h_int": "ScalarError: loss must return a floating scalar, got int64",
        "i_complex": "ScalarError: loss must return a floating scalar, got complex128",
        "j_nan": "NonFiniteLoss: the loss itself is not finite (nan)",
        "k_inf": "NonFiniteLoss: the loss itself is not finite (inf)",
        "l_oom_numpy": "out of memory: MemoryError: Unable to allocate 6.00 GiB",
        "m_oom_torch": "out of memory: RuntimeError:",
    }
    for case, needle in expected.items():
        rec = runs[case]
        assert rec["verdict"] == "error", rec
        assert rec["message"].startswith(needle), (case, rec["message"])
        assert "\n" not in rec["message"]
    assert "called from t_segv (faults.py:" in runs["d_segv"]["message"]
    # the traceback's last lines travel in the record: the case's own frame and the error
    assert 'raise RuntimeError("loss exploded")' in runs["e_raise"]["traceback"]
    assert runs["f_autodiff"]["traceback"].splitlines()[-1].endswith("RuntimeError: backward exploded")
    assert "boom_make" in runs["b_make"]["traceback"]
    assert "faults.py" in runs["c_abort"]["traceback"] and "Fatal Python error" in runs["c_abort"]["traceback"]
    # the tasks around the faults still ran (a fresh worker after each crash) and pass
    recs = results(out)
    for case in ("a_ok_first", "z_ok_last"):
        mine = [r for r in recs if r["case"] == case]
        assert mine and all(r["verdict"] == "pass" for r in mine), mine
    # no NaN noise from the non-finite losses: one error record each, nothing else
    assert [r["check"] for r in recs if r["case"] in ("j_nan", "k_inf")] == ["run", "run"]
    # the report has an error row with the one-line reason for each
    report = (out / "report.md").read_text()
    for case, needle in expected.items():
        assert _reported(report, case, needle), (case, _error_rows(report))
    assert "address space limited to 3.00 GiB" in (out / "logs" / "torch-cpu-default.log").read_text()


# ---- 2: hangs -------------------------------------------------------------------------------------
@needs_torch
def test_hung_task_and_hung_worker_group_are_killed_with_their_children(tmp_path):
    cases = tmp_path / "hangs.py"
    cases.write_text(HANGS)
    pids_task, pids_group = tmp_path / "pids_task", tmp_path / "pids_group"
    start = time.monotonic()
    per_task = _start("run", "--cases", cases, *FAST, "--timeout", "15", "--out", tmp_path / "task",
                      env=_env(FAULT_PIDS=pids_task))
    per_group = _start("run", "--cases", cases, *FAST, "--worker-timeout", "25", "--out", tmp_path / "group",
                       env=_env(FAULT_PIDS=pids_group))
    (code_task, _, err_task), (code_group, _, err_group) = _finish(per_task), _finish(per_group)
    assert time.monotonic() - start < 60
    assert code_task == 1 and code_group == 1, err_task + err_group

    task = _runs(results(tmp_path / "task"))
    assert task["b_hang"]["verdict"] == "error"
    assert task["b_hang"]["message"] == "timed out after 15s (worker killed)"
    assert all(r["verdict"] == "pass" for r in results(tmp_path / "task") if r["case"] != "b_hang"), \
        [(r["case"], r["check"], r["framework"], r["verdict"], r.get("message")) for r in results(tmp_path / "task")
         if r["case"] != "b_hang" and r["verdict"] != "pass"]
    assert {"a_ok_first", "c_ok_last"} <= {r["case"] for r in results(tmp_path / "task") if r["check"] == "fd"}

    group = _runs(results(tmp_path / "group"))
    assert group["b_hang"]["message"].startswith("timed out after 25s: the torch cpu worker's tasks together "
                                                 "exceeded --worker-timeout")
    assert group["c_ok_last"]["verdict"] == "error"
    assert group["c_ok_last"]["message"].startswith("not run: the torch cpu worker's tasks exceeded --worker-timeout")
    assert [r["verdict"] for r in results(tmp_path / "group") if r["case"] == "a_ok_first"][0] == "pass"
    assert _reported((tmp_path / "task" / "report.md").read_text(), "b_hang", "timed out after 15s")
    assert _reported((tmp_path / "group" / "report.md").read_text(), "b_hang", "timed out after 25s")
    # the hung worker and the child it started were killed (its whole process group)
    for pids in (pids_task, pids_group):
        for pid in map(int, pids.read_text().split()):
            assert _wait_for(lambda: _dead(pid), 10), pid


# ---- 6: frameworks missing or broken --------------------------------------------------------------
@needs_torch
def test_framework_not_installed_or_failing_to_import(tmp_path, monkeypatch, capsys):
    from adapters import FrameworkInfo
    from harness.cli import main

    broken = tmp_path / "fake"
    (broken / "jax").mkdir(parents=True)
    (broken / "jax" / "__init__.py").write_text("raise ImportError('this jax is broken (test)')\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))        # the workers see the broken jax first
    monkeypatch.syspath_prepend(str(broken))             # and find_spec here counts it as installed
    real = FrameworkInfo.installed
    monkeypatch.setattr(FrameworkInfo, "installed",
                        lambda self: False if self.name == "tensorflow" else real(self))
    assert FRAMEWORKS["jax"].installed() and not FRAMEWORKS["tensorflow"].installed()

    out = tmp_path / "run"
    code = main.main(["run", "--cases", "linear_mse", "--frameworks", "torch,jax,tensorflow", "--dtypes",
                     "float64", "--timing", "off", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "note: tensorflow is not installed, its rows are skipped. Install: pip install" in err
    recs = results(out)
    jax = [r for r in recs if r["framework"] == "jax" and not r.get("other_framework")]
    assert jax and all(r["verdict"] == "error" for r in jax)
    # its comparisons with the others are not made, and say so (never silently dropped)
    pairs = [r for r in recs if "jax" in (r["framework"], r.get("other_framework")) and r.get("other_framework")]
    assert pairs and all(r["verdict"] == "skipped" and "jax" in r["message"] for r in pairs), \
        [(r["check"], r["framework"], r["other_framework"], r["verdict"], r["message"]) for r in pairs]
    assert jax[0]["message"] == "jax failed to import: ImportError: this jax is broken (test)"
    assert "this jax is broken" in jax[0]["traceback"]
    tf = [r for r in recs if r["framework"] == "tensorflow"]
    assert tf and all(r["verdict"] == "skipped" and "tensorflow is not installed: pip install" in r["message"]
                      for r in tf)
    torch = [r for r in recs if r["framework"] == "torch"]
    # (torch's one error is its known upstream forward-over-reverse bug, pytorch#123996)
    assert torch and all(r["verdict"] in ("pass", "skipped") or r.get("known") for r in torch)
    assert any(r["verdict"] == "pass" and r["check"] == "fd" for r in torch)
    assert _reported((out / "report.md").read_text(), "linear_mse",
                     "jax failed to import: ImportError: this jax is broken (test)")


def test_a_gpu_the_frameworks_cannot_use_skips_its_tasks_with_each_frameworks_reason(tmp_path):
    """A machine with an NVIDIA GPU and CPU-only framework builds (pip install jax without its CUDA
    plugin is the common one): every cuda:0 task is `skipped` with that framework's reason, never an
    error from deep inside its backend initialisation, and the CPU tasks are untouched."""
    env = fake_gpu_env(tmp_path / "bin")
    if env is None:
        pytest.skip("a real nvidia-smi is on PATH: the frameworks may use the GPU")
    installed = [fw for fw, info in FRAMEWORKS.items() if info.installed()]
    out = tmp_path / "run"
    proc = harness("run", "--cases", "linear_mse", "--frameworks", ",".join(installed), "--devices", "cpu,cuda:0",
                   "--dtypes", "float64", "--timing", "off", "--quiet", "--out", out, env=env)
    assert proc.returncode in (0, 1), proc.stderr
    recs = results(out)
    gpu = [r for r in recs if r["device"] == "cuda:0"]
    assert {r["framework"] for r in gpu} == set(installed)
    assert all(r["verdict"] == "skipped" for r in gpu), [(r["framework"], r["verdict"], r["message"]) for r in gpu]
    reasons = {r["framework"]: r["message"] for r in gpu if r["check"] == "run"}
    assert set(reasons) == set(installed)
    if "jax" in reasons:
        assert reasons["jax"].startswith("this jax install sees no GPU"), reasons["jax"]
    if "torch" in reasons:
        assert reasons["torch"] == "this torch build sees no CUDA device"
    cpu = [r for r in recs if r["device"] == "cpu" and r["check"] == "fd"]
    assert cpu and all(r["verdict"] == "pass" for r in cpu)


# ---- 7: bad usage ---------------------------------------------------------------------------------
def test_usage_errors_are_one_line_exit_2_and_write_nothing(tmp_path):
    mk = "from harness import Case\nmk = lambda r: ({'w': [1.0]}, {})\n"
    one, two = tmp_path / "one.py", tmp_path / "two.py"
    one.write_text(mk + "A = Case(name='same', make=mk, loss=lambda o, p, i: o.sum(p['w']))\n")
    two.write_text(mk + "B = Case(name='same', make=mk, loss=lambda o, p, i: o.sum(p['w']))\n")
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    out = tmp_path / "out"
    for args, needle in [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--cases", f"{one},{two}"], "duplicate case names across the selection: same"),
        (["--memory-limit", "lots"], "--memory-limit 'lots': give a size such as 8G"),
        (["--worker-timeout", "0"], "--worker-timeout must be positive"),
        (["--timeout", "-1"], "--timeout must be positive"),
        (["--resume", not_a_run], f"--resume {not_a_run}: no run.json there"),
        (["--resume", not_a_run, "--dtypes", "float32"], "--resume takes the run's own settings; drop --dtypes"),
    ]:
        proc = harness("run", *args, *([] if "--resume" in args else ["--out", out]))
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not out.exists()
    assert sorted(p.name for p in not_a_run.iterdir()) == []
    proc = harness("frobnicate")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


# ---- 8: interrupted runs and --resume -------------------------------------------------------------
def _comparable(records):
    """Records as a resumed run must reproduce them: everything but run id and time measurements."""
    drop = {"run_id", "seconds", "times", "median_s", "iqr_s", "first_call_s", "block", "noisy"}
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


@needs_torch
def test_interrupted_runs_keep_what_finished_and_resume_to_the_same_results(tmp_path):
    cases = tmp_path / "resumable.py"
    cases.write_text(RESUMABLE)
    marker, pids = tmp_path / "hang-now", tmp_path / "pids"
    env = _env(FAULT_MARKER=marker, FAULT_PIDS=pids)
    clean = _start("run", "--cases", cases, *FAST, "--out", tmp_path / "clean", env=env)  # no marker yet
    assert _finish(clean)[0] == 0
    marker.write_text("")
    run = tmp_path / "run"
    obs = run / "observations.jsonl"

    def interrupt(proc, sig, hung_before):
        """Wait until the hanging task runs (and the first one is on disk), then signal."""
        assert _wait_for(lambda: len(pids.read_text().split()) > hung_before if pids.exists() else False, 90)
        assert obs.read_text().count("\n") == 1
        proc.send_signal(sig)
        return _finish(proc)

    # SIGINT: workers killed, the finished task kept, a partial report marked interrupted, exit 130
    code, _, err = interrupt(_start("run", "--cases", cases, *FAST, "--out", run, env=env), signal.SIGINT, 0)
    assert code == 130, err
    assert re.search(r"interrupted \(SIGINT\): 1 of 3 task\(s\) finished, kept in .*; finish with "
                     r"`python -m harness run --resume ", err), err
    report = (run / "report.md").read_text()
    assert "**⚠ Interrupted (SIGINT)**: 1 of 3 task(s) finished" in report
    runs = _runs(results(run))
    assert runs["b_maybe_hang"]["verdict"] == "skipped" and "interrupted (SIGINT)" in runs["b_maybe_hang"]["message"]
    assert [r["verdict"] for r in results(run) if r["case"] == "a_first"] and \
        all(r["verdict"] == "pass" for r in results(run) if r["case"] == "a_first")
    assert json.loads((run / "run.json").read_text())["interrupted"]["signal"] == "SIGINT"
    assert len(list((run / "arrays").glob("*.npz"))) == 1 and not list(run.rglob(".*.tmp.*"))
    for pid in map(int, pids.read_text().split()):
        assert _wait_for(lambda: _dead(pid), 10), pid

    # SIGTERM during a resume (still hanging): exit 143, nothing finished is lost
    code, _, err = interrupt(_start("run", "--resume", run, env=env), signal.SIGTERM, 2)
    assert code == 143, err
    assert "**⚠ Interrupted (SIGTERM)**" in (run / "report.md").read_text()

    # SIGKILL: no report written, but the worker dies with its parent and the observations stay
    killed = _start("run", "--resume", run, env=env)
    hung_worker = None
    assert _wait_for(lambda: len(pids.read_text().split()) > 4, 90)
    hung_worker = int(pids.read_text().split()[-2])
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=30)
    assert _wait_for(lambda: _dead(hung_worker), 10), "the worker outlived its killed parent"
    with open(obs, "a") as fh:   # as if the kill had torn a line mid-write
        fh.write('{"id": "c_last/torch/cpu/float64/eager/default", "status": "o')

    marker.unlink()
    code, out, err = _finish(_start("run", "--resume", run, "--quiet", env=env))
    assert code == 0, err
    assert "Interrupted" not in (run / "report.md").read_text()
    meta = json.loads((run / "run.json").read_text())
    assert "interrupted" not in meta and len(meta["resumed"]) == 3
    assert len(obs.read_text().splitlines()) == 3
    assert _comparable(results(run)) == _comparable(results(tmp_path / "clean"))
    for name in sorted(p.name for p in (tmp_path / "clean" / "arrays").iterdir()):
        a, b = np.load(run / "arrays" / name), np.load(tmp_path / "clean" / "arrays" / name)
        assert sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)


# ---- 9: output folder unwritable, disk full --------------------------------------------------------
def test_output_folder_that_cannot_be_created_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = harness("run", "--cases", "linear_mse", *FAST, "--out", blocker / "run")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: cannot write the run folder {blocker / 'run'}: ")
    assert len(proc.stderr.strip().splitlines()) == 1
    if os.geteuid() != 0:      # root ignores permission bits
        ro = tmp_path / "read-only"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            proc = harness("run", "--cases", "linear_mse", *FAST, "--out", ro / "deep" / "run")
            assert proc.returncode == 2 and "Permission denied" in proc.stderr
            assert list(ro.iterdir()) == []
        finally:
            ro.chmod(0o700)


@needs_torch
def test_disk_full_mid_run_stops_cleanly_and_resume_finishes(tmp_path, monkeypatch, capsys):
    """ENOSPC on the second observation: one line, exit 2, the first observation kept, no
    results or report half-written; after that, --resume finishes the run."""
    from harness.cli import main
    from harness.run import session

    real_open = open

    class FillsUp:
        def __init__(self, fh):
            self.fh, self.lines = fh, 0

        def write(self, text):
            self.lines += 1
            if self.lines > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(text)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def fake_open(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        return FillsUp(fh) if str(path).endswith("observations.jsonl") and "a" in mode else fh

    monkeypatch.setattr(session, "open", fake_open, raising=False)
    out = tmp_path / "run"
    argv = ["run", "--cases", "linear_mse,elementwise_chain", *FAST, "--quiet", "--out", str(out)]
    assert main.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: writing {out / 'observations.jsonl'} failed: No space left on device; "
                          f"the 1 observation(s) before it are kept"), err
    assert len(err.splitlines()) == 1
    assert len((out / "observations.jsonl").read_text().splitlines()) == 1
    assert not (out / "results.jsonl").exists() and not (out / "report.md").exists()
    assert not list(out.rglob(".*.tmp.*")) and not list(out.rglob("*.tmp.*"))
    monkeypatch.setattr(session, "open", real_open, raising=False)
    assert main.main(["run", "--resume", str(out), "--quiet"]) == 0
    assert {r["case"] for r in results(out)} == {"linear_mse", "elementwise_chain"}


def test_atomic_write_keeps_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
    from harness.store import records

    target = tmp_path / "report.md"
    records.atomic_write_text(target, "old report\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(records.os, "fsync", full)
    with pytest.raises(OSError):
        records.atomic_write_text(target, "new report that does not fit\n")
    assert target.read_text() == "old report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_torn_observation_lines_are_dropped_on_read(tmp_path):
    from harness.store.records import read_observations

    path = tmp_path / "observations.jsonl"
    path.write_text('{"id": "a", "status": "error"}\n{"id": "b", "status": "ok"}\n'
                    '{"id": "a", "status": "ok"}\n{"id": "c", "sta')
    assert read_observations(path) == [{"id": "b", "status": "ok"}, {"id": "a", "status": "ok"}]


# ---- 10: two runs into one reports/ folder at once; nothing written outside it ----------------------
@needs_torch
def test_concurrent_runs_into_one_reports_folder_and_no_writes_elsewhere(tmp_path):
    work, user = tmp_path / "work", tmp_path / "user-cases"
    work.mkdir()
    user.mkdir()
    (user / "mine.py").write_text(COMMON + "CASES = [Case(name='mine', make=make, loss=ok)]\n")
    env = _env(PYTHONPATH=ROOT)
    procs = [_start("run", "--cases", user / "mine.py", *FAST, cwd=work, env=env) for _ in range(2)]
    for proc in procs:
        code, out, err = _finish(proc)
        assert code == 0, err
    runs = sorted(p for p in (work / "reports").iterdir() if p.name != "latest")
    assert len(runs) == 2 and runs[0].name != runs[1].name
    ids = set()
    for run in runs:
        recs = results(run)
        assert recs and all(r["verdict"] == "pass" for r in recs)
        ids |= {r["run_id"] for r in recs}
        assert (run / "report.md").read_text().startswith(f"# gradharness report — {run.name}")
    assert ids == {r.name for r in runs}
    latest = work / "reports" / "latest"
    assert latest.is_symlink() and os.readlink(latest) in ids
    assert sorted(p.name for p in (work / "reports").iterdir()) == sorted([*ids, "latest"])  # no temp links
    # only the output folder was written: nothing beside the user's case file, nothing else in cwd
    assert [p.name for p in user.iterdir()] == ["mine.py"]
    assert [p.name for p in work.iterdir()] == ["reports"]


# ---- determinism ------------------------------------------------------------------------------------
GLOBAL_RNG = textwrap.dedent('''
    import numpy as np
    from harness import Case

    def make(rng):   # reaches for numpy's global generator: still a function of the seed only
        return {"w": np.random.normal(size=(4, 3)), "b": rng.normal(size=3)}, {"x": rng.normal(size=(5, 4))}

    def loss(ops, p, i):
        return ops.mean(ops.tanh(ops.add(ops.matmul(i["x"], p["w"]), p["b"])))

    CASES = [Case(name="global_rng", make=make, loss=loss)]
''')


def test_same_seed_gives_bitwise_identical_gradients_run_to_run(tmp_path):
    installed = [fw for fw, info in FRAMEWORKS.items() if info.installed()]
    if not installed:
        pytest.skip("no framework installed")
    cases = tmp_path / "global_rng.py"
    cases.write_text(GLOBAL_RNG)
    args = ("run", "--cases", f"linear_mse,{cases}", "--frameworks", ",".join(installed),
            "--dtypes", "float64,float32", "--timing", "off", "--threads", "1", "--quiet")
    procs = [_start(*args, "--out", tmp_path / name) for name in ("one", "two")]
    for proc in procs:
        code, out, err = _finish(proc)
        assert code == 0, out + err
    one, two = tmp_path / "one" / "arrays", tmp_path / "two" / "arrays"
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir())
    assert {fw for fw in installed if any(f"__{fw}__" in n for n in names)} == set(installed)
    assert any("__float32__" in n for n in names) and any("__float64__" in n for n in names)
    for name in names:
        with np.load(one / name, allow_pickle=False) as a, np.load(two / name, allow_pickle=False) as b:
            assert sorted(a.files) == sorted(b.files), name
            for key in a.files:
                assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), (name, key)
    assert _comparable(results(tmp_path / "one")) == _comparable(results(tmp_path / "two"))
    proc = harness("compare", tmp_path / "one", tmp_path / "two", "--fail-on", "change")
    assert proc.returncode == 0, proc.stdout + proc.stderr     # `harness compare`: no gradient moved


def test_builtin_cases_draw_randomness_from_the_seed_only():
    """make(rng) is the only source: no global numpy / Python / framework generator in cases/."""
    pattern = re.compile(r"np\.random\.(?!default_rng|Generator|SeedSequence|PCG64)\w+|^\s*import random\b|"
                         r"torch\.(rand|randn|randint|manual_seed|normal|bernoulli)\b|tf\.random\.|"
                         r"jax\.random\.PRNGKey\(\s*\d", re.M)
    offenders = []
    for path in sorted((ROOT / "cases").glob("*.py")):
        for match in pattern.finditer(path.read_text()):
            offenders.append(f"{path.name}: {match.group(0)}")
    assert not offenders, offenders


# ---- one task loop: the worker's and the in-process runner's -------------------------------------------
RAISES = COMMON + textwrap.dedent('''
    def t_raise(p, i):
        raise RuntimeError("loss exploded\\nthe report keeps the first line only")

    CASES = [Case(name="e_raise", make=make, native={"torch": t_raise}),
             Case(name="a_ok", make=make, loss=ok)]
''')


@needs_torch
def test_in_process_and_worker_report_a_raising_loss_alike_and_in_process_writes_no_npz(tmp_path, monkeypatch):
    """Both run a task through harness.worker.task.run_task: the same reason and traceback; and
    in process the judge reads the arrays from memory, so no array file is written anywhere."""
    import tempfile

    from harness.define import loader
    from harness.plan.tasks import Task
    from harness.run import inprocess
    from harness.run.local import Worker

    source = tmp_path / "raises.py"
    source.write_text(RAISES)
    task = Task(case="e_raise", source=str(source), framework="torch", device="cpu", dtype="float64",
                mode="eager", precision="default", seed=0, fd=True)
    worker = Worker("torch", "cpu", "default", 1, tmp_path / "worker.log")
    try:
        assert worker.receive(600)["type"] == "hello"
        assert worker.send(task.message(str(tmp_path / "worker.npz")))
        answer = worker.receive(600)
    finally:
        worker.close()
    assert answer["status"] == "error" and answer["reason"] == "RuntimeError: loss exploded", answer

    written = []
    for name in ("save", "savez", "savez_compressed"):
        monkeypatch.setattr(np, name, lambda *args, **kwargs: written.append(args))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    rows = []
    records = inprocess.run_case(loader.find("e_raise", str(source)), frameworks=["torch"], dtypes=("float64",),
                                 observations=rows)
    (row,) = rows
    assert (row["status"], row["reason"], row["traceback"]) == (answer["status"], answer["reason"], answer["traceback"])
    assert 'raise RuntimeError("loss exploded' in row["traceback"]
    (run,) = [r for r in records if r["check"] == "run"]
    assert (run["verdict"], run["message"], run["traceback"]) == ("error", answer["reason"], answer["traceback"])

    fine = inprocess.run_case(loader.find("a_ok", str(source)), frameworks=["torch"], dtypes=("float64",))
    assert {r["verdict"] for r in fine if r["check"] == "fd"} == {"pass"}   # judged from arrays in memory
    assert not written and not list(tmp_path.rglob("*.npz"))


# ---- safety -------------------------------------------------------------------------------------------
def test_arrays_are_never_unpickled(tmp_path):
    from harness.judge.observation import Observation

    np.savez(tmp_path / "evil.npz", **{"grad/w": np.array([{"not": "an array"}], dtype=object)})
    obs = Observation({"arrays": "evil.npz", "status": "ok"}, tmp_path)
    with pytest.raises(ValueError, match="allow_pickle"):
        obs.grads


def test_crash_report_names_the_fatal_error_and_the_cases_frame():
    from harness.run.local import crash_report

    log = textwrap.dedent('''\
        [harness] task x/torch/cpu/float64/eager/default
        Fatal Python error: Segmentation fault

        Current thread 0x00007f (most recent call first):
          File "/usr/lib/python3.11/ctypes/__init__.py", line 519 in string_at
          File "/home/me/cases/bad.py", line 17 in t_segv
          File "/work/main/harness/worker/observe.py", line 51 in f

        Extension modules: numpy.core._multiarray_umath, torch._C (total: 2)
        ''')
    summary, excerpt = crash_report(log)
    assert summary.startswith("Fatal Python error: Segmentation fault in string_at (__init__.py:519)")
    assert "bad.py" in excerpt and "Extension modules" not in excerpt and "[harness]" not in excerpt
    assert crash_report("some warning\nlast words\n")[0] == "some warning | last words"


def test_memory_limit_sizes():
    from harness.cli.main import UsageError, _size

    assert _size("8G") == 8 * 2**30 and _size("512M") == 512 * 2**20 and _size("2") == 2 * 2**30
    assert _size("1.5GiB") == int(1.5 * 2**30) and _size("4096k") == 4 * 2**20
    for bad in ("lots", "1K", ""):
        with pytest.raises(UsageError):
            _size(bad)
