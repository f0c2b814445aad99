#!/usr/bin/env bash
# The GPU proof, one script, bounded in time (GPU_CHECK_SECONDS, default 480): on the first CUDA GPU
#   1. the `gpu`-tagged cases on cpu and the GPU, float64 and float32, under each framework's default
#      float32 policy and under full float32 (--precision default,highest): the TF32 findings
#      (labelled precision-policy and confirmed under highest by the judge) and CPU vs GPU;
#   2. JAX eager vs jit on the GPU;
#   3. benchmarks/timing_fidelity.py on the GPU (and on the CPU if time is left);
#   4. a short fuzz run over cpu and the GPU, eager and compiled;
#   5. the ported models (GPT, ResNet, LSTM, and one planted port mistake) on cpu and the GPU;
# then benchmarks/gpu_summary.py over all of it. Where there is no GPU everything runs on the CPU
# (so the script can be tried anywhere). Each step is bounded by what is left of the time: a run or
# fuzz step stopped by it writes its partial report (the harness finishes on SIGTERM, killing its
# workers) and the summary names what is missing or stopped.
#
#   benchmarks/gpu_check.sh [OUT_DIR]        (default: $OUT, else reports/gpu-check)
#
# OUT_DIR gets four files (the device tool brings back eight, two folders deep): NAME.tar.gz, the whole
# example folder NAME/ (NAME = the GPU's name and the date, e.g. h100-80gb-hbm3-2026-12-07) to
# unpack under reports/examples/; and, to read at once, summary.md, report.md and gpu_check.log.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-${OUT:-$here/reports/gpu-check}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$here"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
deadline=$(( SECONDS + ${GPU_CHECK_SECONDS:-480} ))
log="$out/gpu_check.log"
: > "$log"
step() { echo "== $* ($(date +%T), $(( deadline - SECONDS )) s left)" | tee -a "$log"; }
# bounded SECS [--to FILE] CMD...: CMD under SIGTERM after min(SECS, time left) seconds (KILL 30 s
# later); its output to the log, or its stdout to FILE (copied to the log after) and stderr to the log
bounded() {
    local cap=$1; shift
    local to=""
    if [ "$1" = --to ]; then to=$2; shift 2; fi
    local left=$(( deadline - SECONDS ))
    (( left < cap )) && cap=$left
    if (( cap < 15 )); then echo "skipped: $cap s left" >> "$log"; return 124; fi
    if [ -n "$to" ]; then
        timeout -k 30 "$cap" "$@" > "$to" 2>> "$log"
    else
        timeout -k 30 "$cap" "$@" >> "$log" 2>&1
    fi
    local rc=$?
    [ -n "$to" ] && cat "$to" >> "$log"
    case $rc in
        124) echo "exit code $rc (stopped by the time bound)" >> "$log" ;;
        137) echo "exit code $rc (killed 30 s after the time bound)" >> "$log" ;;
        *) echo "exit code $rc" >> "$log" ;;
    esac
    return $rc
}

step "machine"
{ nvidia-smi -L 2>&1 || echo "no nvidia-smi"; "$python" --version; "$python" -m harness list | sed -n '/^framework/,$p'; } >> "$log" 2>&1
gpu="$(nvidia-smi -L 2>/dev/null | sed -n 's/^GPU 0: \(.*\) (UUID.*$/\1/p')"
if [ -n "$gpu" ] && "$python" -m harness list 2>/dev/null | grep -q '^cuda:0'; then
    device=cuda:0; devices=cpu,cuda:0; cuda=cuda
else
    gpu="cpu"; device=cpu; devices=cpu; cuda=cpu
fi
slug="$(echo "$gpu" | sed 's/^NVIDIA //' | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//')"
# letters, digits, '.', '_' and '-' only: what the device tool brings back
name="$(echo "${GPU_CHECK_NAME:-$slug-$(date +%Y-%m-%d)}" | sed 's/[^A-Za-z0-9._-]/-/g')"
work="$(mktemp -d)"
ex="$work/$name"
mkdir -p "$ex"
echo "device $device ($gpu); example folder $name" >> "$log"

step "1. gpu cases on $devices, float64/float32, precision default,highest"
bounded 170 "$python" -m harness run --cases gpu --devices "$devices" --dtypes float64,float32 \
    --precision default,highest --timing quick --out "$work/run" --quiet
step "2. jax eager vs jit on $device"
bounded 60 "$python" -m harness run --cases gpu --frameworks jax --devices "$device" --dtypes float32 \
    --modes eager,compiled --timing quick --out "$work/jit" --quiet
step "3. timing fidelity on $cuda"
bounded 120 --to "$ex/timing_fidelity_$cuda.txt" "$python" benchmarks/timing_fidelity.py --device "$cuda"
step "4. fuzz on $devices, eager and compiled"
# what is left after the port step's 100 s and fuzz's own 40 s of grace (step 6 is optional)
fuzz_budget=$(( deadline - SECONDS - 140 )); (( fuzz_budget > 60 )) && fuzz_budget=60
if (( fuzz_budget >= 20 )); then
    bounded $(( fuzz_budget + 40 )) "$python" -m harness fuzz --budget "${fuzz_budget}s" --devices "$devices" \
        --frameworks "$("$python" -c 'from adapters import FRAMEWORKS as F; print(",".join(f for f in ("torch", "jax") if F[f].installed()))')" \
        --dtypes float64,float32 --modes eager,compiled --round-size 16 --jobs 4 --out "$work/fuzz" --quiet
else
    echo "skipped: $fuzz_budget s of fuzzing left" >> "$log"
fi
step "5. ported models on $devices"
bounded 100 "$python" -m harness run --cases gpt_port,resnet_port,lstm_port,gpt_port_transposed_c_proj \
    --frameworks torch,jax --devices "$devices" --dtypes float64,float32 --precision default,highest \
    --timing off --out "$work/port" --quiet
if [ "$cuda" != cpu ] && (( deadline - SECONDS >= 70 )); then
    step "6. timing fidelity on cpu"
    bounded 100 --to "$ex/timing_fidelity_cpu.txt" "$python" benchmarks/timing_fidelity.py --device cpu
fi

step "collect"
for part in run jit port; do
    [ -d "$work/$part" ] || continue
    dest="$ex"; [ "$part" = run ] || dest="$ex/$part"
    mkdir -p "$dest"
    for f in report.md results.jsonl run.json "$work/$part"/*.png; do
        f="$(basename "$f")"; [ -f "$work/$part/$f" ] && cp "$work/$part/$f" "$dest/"
    done
done
if [ -d "$work/fuzz" ]; then
    mkdir -p "$ex/fuzz"
    cp "$work/fuzz"/fuzz.md "$work/fuzz"/fuzz.json "$work/fuzz"/findings.jsonl "$ex/fuzz/" 2>> "$log"
    [ -d "$work/fuzz/findings" ] && cp -r "$work/fuzz/findings" "$ex/fuzz/"
fi
"$python" benchmarks/gpu_summary.py "$ex" --out "$ex/summary.md" > /dev/null 2>> "$log"
step "done"
cp "$log" "$ex/gpu_check.log"
cp "$ex/summary.md" "$out/" 2>/dev/null
cp "$ex/report.md" "$out/" 2>/dev/null
tar -czf "$out/$name.tar.gz" -C "$work" "$name" 2>> "$log"
rm -rf "$work"
echo "wrote $out/$name.tar.gz (unpack: tar -xzf $out/$name.tar.gz -C reports/examples)"
