#!/usr/bin/env bash
# The GPU figures of benchmarks/perf/README.md in one go: extraction throughput (fp16, fp32; CPU
# decode in 16 workers and nvJPEG), official-style loop vs oodbench over 1,000 ImageNet prompts,
# scoring, and the CUDA-only extraction test. Each step runs even if an earlier one failed; the
# CSV rows go to benchmarks/perf/results/ (and to $OUT when set, for a remote machine).
#
#   bash benchmarks/perf/gpu.sh            # IMAGES=5000 BIG=10000 WORKERS=16 by default
set -u
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
IMAGES=${IMAGES:-5000}
BIG=${BIG:-10000}
WORKERS=${WORKERS:-16}
DEVICE=${DEVICE:-cuda}
P=benchmarks/perf
step() {
    echo; echo "=== $* ($(date +%T))"
    "$@" || echo "!!! step failed (rc $?): $*"
    if [ -n "${OUT:-}" ]; then cp $P/results/*.csv "$OUT"/; fi
}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
for prec in fp16 fp32; do
    step "$PY" $P/extraction_throughput.py --device "$DEVICE" --models perf-vit-b-16-random \
        --images "$IMAGES" --batch-size 256 --workers "$WORKERS" --precision $prec --decode cpu,device
done
for decode in cpu device; do
    step "$PY" $P/official_vs_oodbench.py --device "$DEVICE" --protocol perf-jpeg \
        --backbone perf-vit-b-16-random --images "$BIG" --classes 1000 --batch-size 256 \
        --workers "$WORKERS" --precision fp16 --official-precision fp16 --decode $decode
done
step "$PY" $P/scoring.py --device "$DEVICE" --repeats 5
step "$PY" -m pytest -q tests/test_extract.py -k cuda -p no:cacheprovider
