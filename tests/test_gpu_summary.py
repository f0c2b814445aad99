"""benchmarks/gpu_summary.py on a real GPU run: reports/examples/h200-models (torch and JAX on an
H200, 2026-11-28). The figures it must find there are the ones that run showed: JAX's default
float32 matmuls (TF32) and torch's cuDNN RNNs labelled precision-policy and confirmed under
--precision highest, torch's plain float32 matmuls at IEEE float32 level, and float64 GPU gradients
equal to the CPU's to ~1e-15."""
import importlib.util
import json
import shutil
from pathlib import Path

from tests.helpers import ROOT

H200 = ROOT / "reports" / "examples" / "h200-models"


def _summary():
    spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "benchmarks" / "gpu_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.summary


def _row(text, *cells):
    """The table line whose leading cells are ``cells``."""
    for line in text.splitlines():
        parts = [p.strip() for p in line.strip("|").split("|")]
        if parts[:len(cells)] == list(cells):
            return parts
    raise AssertionError(f"no row {cells}")


def test_the_tf32_findings_and_cpu_vs_gpu_of_a_real_h200_run(tmp_path):
    folder = tmp_path / "h200"
    folder.mkdir()
    shutil.copy(H200 / "results.jsonl", folder / "results.jsonl")
    text = _summary()(folder)
    assert "cuda:0: NVIDIA H200" in text and "torch 2.11.0+cu130" in text
    # JAX: TF32 matmuls by default, found, labelled and confirmed
    mlp = _row(text, "mlp_native", "jax", "cuda:0")
    assert float(mlp[4]) > 1e-5 and float(mlp[5]) < 1e-6 and mlp[7] == "confirmed", mlp
    # torch: cuDNN's RNN in TF32 (confirmed), its plain matmuls IEEE
    assert _row(text, "lstm_seq", "torch", "cuda:0")[7] == "confirmed"
    assert _row(text, "mlp_native", "torch", "cuda:0")[7] == "within float32 (IEEE)"
    assert "cudnn.rnn.fp32_precision=tf32" in text and "jax_default_matmul_precision=default" in text
    # CPU vs GPU in float64: every record passes, at ~1e-15
    for fw in ("jax", "torch"):
        row = _row(text, fw, "cuda:0", "eager")
        assert row[3] == row[4] and float(row[5]) < 1e-13, row
    # what the policy does not explain is listed, not hidden (torch's forward mode on cuDNN RNNs)
    assert "Failing GPU records the precision policy does not explain: **8**" in text
    # the steps that did not run are named as missing
    assert text.count("missing:") == 4
    assert _summary()(folder) == text   # a pure function of the files


def test_timing_fidelity_lines_and_a_stopped_run(tmp_path):
    (tmp_path / "timing_fidelity_cuda.txt").write_text(
        "mlp_timing_4096x4096, float32 forward+backward, ...\n"
        "torch      eager on NVIDIA H100 80GB HBM3: harness 2.104 ms, own tool 2.098 ms, deviation 0.3% (median "
        "over 10 quiet paired rounds of 10; their ratios' IQR 0.998-1.004)\n"
        "jax        jit   on NVIDIA H100 80GB HBM3: harness 1.911 ms, own tool 1.950 ms, deviation 2.0% (median "
        "over 9 quiet paired rounds of 10; their ratios' IQR 0.97-0.99)\n"
        "tensorflow not measured on cuda: this tensorflow build sees no GPU\n"
        "max_deviation_pct=2.0 (not measured: tensorflow)\n")
    port = tmp_path / "port"
    port.mkdir()
    mark = {"case": "gpt_port_ln_eps", "check": "layer_forward", "framework": "jax", "other_framework": "torch",
            "device": "cuda:0", "dtype": "float64", "mode": "eager", "precision": "default", "verdict": "diverge",
            "param": "transformer.h.0.ln_1", "layer": "transformer.h.0.ln_1", "first_divergence": True,
            "cause": "different-function", "max_rel_err": 0.02, "message": "first divergence"}
    (port / "results.jsonl").write_text(json.dumps(mark) + "\n")
    (port / "run.json").write_text(json.dumps({"interrupted": {"signal": "SIGTERM", "finished": 3, "tasks": 8}}))
    text = _summary()(tmp_path)
    assert _row(text, "cuda", "jax", "jit", "NVIDIA H100 80GB HBM3")[6] == "2.0"
    assert _row(text, "cuda", "**max_deviation_pct**")[6] == "**2.0**"
    assert _row(text, "cuda", "tensorflow")[6:] == ["not measured", "this tensorflow build sees no GPU"]
    assert _row(text, "cuda", "**max_deviation_pct**")[7] == "(not measured: tensorflow)"
    (tmp_path / "timing_fidelity_cpu.txt").write_text(
        "torch      not measured on cpu: (planted)\nmax_deviation_pct=nan (not measured: torch)\n")
    assert _row(_summary()(tmp_path), "cpu", "**max_deviation_pct**")[6] == "not measured"
    assert "Stopped by the time bound (SIGTERM): 3 of 8 tasks finished" in text
    assert _row(text, "gpt_port_ln_eps", "cuda:0", "float64", "default", "layer_forward")[5] == "transformer.h.0.ln_1"
    assert "Failing GPU records (not precision policy): **1**" in text
    assert Path(tmp_path / "results.jsonl").exists() is False and "the main run did not finish" in text
