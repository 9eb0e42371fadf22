#!/usr/bin/env bash
# Proof that the tests catch each deviation issue 13 fixed: put the old behaviour back in one
# line (sed), run the tests that must catch it, expect a failure, restore the file. Prints one
# line per deviation ("caught" or "NOT CAUGHT") and leaves the tree as it found it.
#
#   bash benchmarks/faithfulness/revert_deviations.sh        # about 4 minutes on 2 CPU cores
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
status=0
check() {  # name file sed-expression pytest-args...
  local name=$1 file=$2 expr=$3; shift 3
  local backup
  backup=$(mktemp)
  cp "$file" "$backup"
  sed -i "$expr" "$file"
  if cmp -s "$file" "$backup"; then
    echo "$name: the old line was not found (update this script)"; status=1
  elif "$PY" -m pytest -q -x -p no:cacheprovider "$@" > /dev/null 2>&1; then
    echo "$name: NOT CAUGHT"; status=1
  else
    echo "$name: caught"
  fi
  cp "$backup" "$file"; rm -f "$backup"
}
F=tests/test_official_formulas.py
check glmcm-period oodbench/detectors/glmcm.py \
  's/    template: str = "a photo of a {}"$/    template: str = "a photo of a {}."/' $F -k gl_mcm
check energy-x100 oodbench/detectors/baselines.py \
  's/    logit_scale: float | None = 1.0$/    logit_scale: float | None = 100.0/' $F -k "energy or maxlogit"
check localprompt-div100 oodbench/detectors/local_prompt.py \
  's/        c = self.scale \/ OFFICIAL_DIVISOR$/        c = self.scale/' $F -k local_prompt
check locoop-div100 oodbench/detectors/locoop.py \
  's/        self.cos_factor = scale \/ OFFICIAL_DIVISOR$/        self.cos_factor = 1.0/' $F -k locoop
check krnft-scale100 oodbench/detectors/krnft.py \
  's/        self.scale = float(ctx.backbone.model.logit_scale.detach().exp())$/        self.scale = 100.0/' \
  $F -k krnft_score
check lapt-scale100 oodbench/detectors/lapt.py \
  's/                            else 1.0 \/ float(model.logit_scale.detach().exp()))$/                            else 0.01)/' \
  $F -k lapt_score
check mcm-bicubic oodbench/detectors/mcm.py \
  's/        interpolation="bilinear", resize_ratio=1.0,$/        interpolation=None, resize_ratio=None,/' \
  tests/test_recipes.py tests/test_mcm_and_baselines.py
check corpus-wordnet30 oodbench/detectors/neglabel.py \
  's/        corpus = "toy" if protocol_name.startswith("toy") else "neglabel"$/        corpus = "toy" if protocol_name.startswith("toy") else "wordnet30"/' \
  tests/test_recipes.py tests/test_neglabel.py
exit $status
