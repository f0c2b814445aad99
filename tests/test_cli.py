"""Usage errors: one clear line, exit code 2, nothing written. `list` is fast and framework-free."""
import sys
import time

import pytest

from tests.helpers import ROOT, harness


@pytest.mark.parametrize("args,needle", [
    (["--cases", "no_such_case"], "unknown case, tag or file: 'no_such_case'"),
    (["--frameworks", "mxnet"], "unknown framework 'mxnet'"),
    (["--devices", "tpu:7"], "unknown device 'tpu:7'"),
    (["--devices", "cuda:9"], "cuda:9"),
    (["--dtypes", "float8"], "unknown dtype 'float8'"),
    (["--modes", "lazy"], "unknown mode 'lazy'"),
    (["--cases", "/nonexistent/cases.py"], "case file not found"),
])
def test_usage_errors_exit_2_with_one_line_and_write_nothing(tmp_path, args, needle):
    out = tmp_path / "run"
    proc = harness("run", *args, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_malformed_case_files(tmp_path):
    bad_syntax = tmp_path / "syntax.py"
    bad_syntax.write_text("def broken(:\n")
    raises = tmp_path / "raises.py"
    raises.write_text("import numpy\nraise RuntimeError('boom')\n")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    dupes = tmp_path / "dupes.py"
    dupes.write_text("from harness import Case\nmk = lambda r: ({'w': [1.0]}, {})\n"
                     "CASES = [Case(name='a', make=mk, loss=lambda o, p, i: o.sum(p['w'])),"
                     " Case(name='a', make=mk, loss=lambda o, p, i: o.sum(p['w']))]\n")
    badcase = tmp_path / "badcase.py"
    badcase.write_text("from harness import Case\nc = Case(name='bad name', make=None)\n")
    for path, needle in [(bad_syntax, "syntax error"), (raises, "RuntimeError: boom"),
                         (empty, "defines no Case"), (dupes, "duplicate case name 'a'"),
                         (badcase, "must be letters")]:
        proc = harness("run", "--cases", path, "--out", tmp_path / "out")
        assert proc.returncode == 2 and needle in proc.stderr, (path, proc.stderr)
        assert not (tmp_path / "out").exists()


def test_list_is_fast_and_imports_no_framework():
    code = ("import sys, time; t = time.perf_counter(); from harness.cli.main import main; main(['list']); "
            "assert not {'torch', 'jax', 'tensorflow'} & set(sys.modules), sorted(sys.modules); "
            "print('elapsed', time.perf_counter() - t)")
    import subprocess
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - start < 2.0
    for word in ("linear_mse", "torch", "jax", "tensorflow", "cpu", "seed"):
        assert word in proc.stdout


def test_help_documents_exit_codes():
    proc = harness("run", "--help")
    assert proc.returncode == 0
    for flag in ("--cases", "--frameworks", "--devices", "--dtypes", "--seed", "--out", "--quick"):
        assert flag in proc.stdout


def test_both_names_the_two_modes_and_the_two_precisions_as_the_help_says():
    from harness.cli.main import build_parser, settings_from
    argv = ["run", "--cases", "linear_mse", "--modes", "both", "--precision", "both"]
    settings = settings_from(build_parser().parse_args(argv), argv)
    assert settings.modes == ["eager", "compiled"] and settings.precisions == ["default", "highest"]
    proc = harness("run", "--help")
    help_text = " ".join(proc.stdout.split())
    assert "both (eager,compiled)" in help_text and "both (default,highest)" in help_text


def test_a_case_file_imports_the_modules_beside_it(tmp_path):
    """`import mymodel` in a case file (and inside its loss, at call time in the worker) finds
    mymodel.py in the case file's folder; a `cases/` folder there does not shadow the built-in one."""
    from tests.helpers import results

    (tmp_path / "mymodel.py").write_text("SIZE = 3\n\ndef loss(ops, p, i):\n    return ops.sum(ops.tanh(p['w']))\n")
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "__init__.py").write_text("raise RuntimeError('the built-in cases package was shadowed')\n")
    (tmp_path / "porting.py").write_text(
        "import mymodel\nfrom harness import Case\n\n"
        "def lazy_loss(ops, p, i):\n    import mymodel as m\n    return m.loss(ops, p, i)\n\n"
        "port = Case(name='sibling_import', make=lambda rng: ({'w': rng.normal(size=mymodel.SIZE)}, {}),\n"
        "            loss=lazy_loss)\n")
    out = tmp_path / "run"
    proc = harness("run", "--cases", f"linear_mse,{tmp_path / 'porting.py'}", "--frameworks", "torch", "--dtypes",
                   "float64", "--timing", "off", "--quiet", "--out", out)
    assert proc.returncode == 0, proc.stderr
    records = results(out)
    assert {r["case"] for r in records} == {"linear_mse", "sibling_import"}
    mine = [r for r in records if r["case"] == "sibling_import"]
    assert mine and all(r["verdict"] == "pass" for r in mine), [r for r in mine if r["verdict"] != "pass"]
    listed = harness("list", "--cases", tmp_path / "porting.py")
    assert listed.returncode == 0 and "sibling_import" in listed.stdout
