#!/usr/bin/env bash
# The whole toy suite from a cold cache: every registered detector on toy, toy-unseen and
# toy-shift, seeds 0,1,2, training included, then the leaderboards (with plots).
#
#   benchmarks/toy/suite.sh [RESULTS_DIR]     (default: results/)
#
# Env: PYTHON (default: python3, or .venv/bin/python when present), JOBS (parallel bench
# processes, one torch thread each, default 2), SEEDS (default 0,1,2), DETECTORS (default: every
# detector in the registry), CACHE_DIR (default: a fresh temporary cache, removed at the end).
# One torch thread per process keeps the records reproducible on the same torch build.
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS="${1:-results}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
JOBS="${JOBS:-2}"
SEEDS="${SEEDS:-0,1,2}"
PROTOCOLS="toy,toy-unseen,toy-shift"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" OMP_NUM_THREADS=1
DETECTORS="${DETECTORS:-$("$PYTHON" -c 'from oodbench.registry import DETECTORS; print(",".join(DETECTORS.names()))')}"
own_cache=0
if [[ -z "${CACHE_DIR:-}" ]]; then CACHE_DIR="$(mktemp -d -t oodbench-toy-suite-XXXXXX)"; own_cache=1; fi
cleanup() { if [[ $own_cache == 1 ]]; then rm -rf -- "$CACHE_DIR"; fi; }
trap cleanup EXIT

# Round-robin the detectors over JOBS bench processes sharing one cache (the cache and the toy
# world are written under locks); the trained ones are spread first so that the slots end together.
IFS=, read -r -a dets <<< "$DETECTORS"
heavy=(lapt clipn cma krnft local-prompt locoop)
ordered=()
for d in "${heavy[@]}"; do [[ ",$DETECTORS," == *",$d,"* ]] && ordered+=("$d"); done
for d in "${dets[@]}"; do [[ " ${heavy[*]} " == *" $d "* ]] || ordered+=("$d"); done
groups=()
for i in "${!ordered[@]}"; do
  j=$((i % JOBS)); groups[$j]="${groups[$j]:+${groups[$j]},}${ordered[$i]}"
done

start=$(date +%s)
echo "toy suite: ${#ordered[@]} detectors x {$PROTOCOLS} x seeds {$SEEDS}, $JOBS jobs, cache $CACHE_DIR -> $RESULTS"
pids=()
for g in "${groups[@]}"; do
  "$PYTHON" -m oodbench bench --detector "$g" --protocol "$PROTOCOLS" --backbone toy \
    --seeds "$SEEDS" --results-dir "$RESULTS" --cache-dir "$CACHE_DIR" --quiet &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
if [[ $status != 0 ]]; then echo "toy suite: a bench process failed (exit $status)" >&2; exit "$status"; fi
"$PYTHON" -m oodbench leaderboard --plots --results-dir "$RESULTS"
echo "toy suite: done in $(( $(date +%s) - start )) s"
