#!/usr/bin/env bash
# The GPU proof, one script: the harness on the first CUDA GPU for the cases tagged `gpu`, under
# the frameworks' default float32 policies and under full float32 (`--precision default,highest`),
# JAX eager and jit-compiled, plus the timing-fidelity benchmark on GPU and CPU.
# Falls back to CPU where there is no GPU (so it is tested everywhere).
#
#   benchmarks/gpu_check.sh [OUT_DIR]        (default: $OUT, else reports/gpu-check)
#
# At most 8 files land in OUT_DIR: report.md, results.jsonl, jit-report.md, the two benchmark
# outputs, the log, and bundle.tar.gz with both runs (report, results, plots, run.json, logs).
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-${OUT:-$here/reports/gpu-check}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$here"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
work="$(mktemp -d)"
log="$out/gpu_check.log"
step() { echo "== $* ($(date +%T))" | tee -a "$log"; }

step "machine"
{ nvidia-smi -L 2>&1 || echo "no nvidia-smi"; python --version; python -m harness list; } >> "$log" 2>&1
device=cpu
if python -m harness list 2>/dev/null | grep -q '^cuda:0'; then device=cuda:0; fi
cuda=cpu; [ "$device" = cpu ] || cuda=cuda

step "harness run on $device, both precision policies"
python -m harness run --cases gpu --devices "$device" --dtypes float64,float32 \
    --precision default,highest --timing quick --out "$work/run" --quiet >> "$log" 2>&1
echo "exit code $? (1 = divergences found, as expected under TF32-style defaults)" >> "$log"

step "jax eager vs jit on $device"
python -m harness run --cases gpu --frameworks jax --devices "$device" --dtypes float32 \
    --modes eager,compiled --timing quick --out "$work/jit" --quiet >> "$log" 2>&1
echo "exit code $?" >> "$log"

step "timing fidelity on $cuda"
python benchmarks/timing_fidelity.py --device "$cuda" > "$out/timing_fidelity_$cuda.txt" 2>> "$log"
if [ "$cuda" != cpu ]; then
    step "timing fidelity on cpu"
    python benchmarks/timing_fidelity.py --device cpu > "$out/timing_fidelity_cpu.txt" 2>> "$log"
fi

step "collect"
cp "$work/run/report.md" "$out/report.md" 2>/dev/null
cp "$work/run/results.jsonl" "$out/results.jsonl" 2>/dev/null
cp "$work/jit/report.md" "$out/jit-report.md" 2>/dev/null
tar -czf "$out/bundle.tar.gz" -C "$work" --exclude='arrays' --exclude='observations.jsonl' run jit 2>> "$log"
rm -rf "$work"
step "done"
