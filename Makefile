# oodbench — `make bench` sets up .venv when missing, runs, and rebuilds the leaderboards.
#   make bench DETECTOR=mcm,energy [PROTOCOL=toy] [BACKBONE=toy] [SEEDS=0,1,2]
#              [DATA=/data/ood] [LAYOUT=mcm] [LIMIT=16] [PRECISION=fp16]
#              [PARAM='mcm.temperature=1 krnft.shots=16'] [RESULTS=results/local]
#   (DATA: the data root, default $OODBENCH_DATA; LAYOUT: oodbench, mcm or openood-vlm, default
#    detected; LIMIT: at most N images per set, training split included, for smoke runs;
#    BACKBONE=ViT-B-16:random runs the real path without weights, never ranked)
#   make test        fast tests (what CI runs first)
#   make test-slow   end-to-end tests on the toy world
#   make leaderboard rebuild $(RESULTS)/leaderboard/ from $(RESULTS)/runs/
#   make reference   rerun the shipped toy reference (results/runs, results/leaderboard)
#   make lint        ruff
#   make clean-cache remove the default feature cache (see README, "Cache")
#   make help        this text

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build to install; override for another CUDA/CPU build, e.g. TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1
DETECTOR ?= mcm
SEEDS ?= 0
PROTOCOL ?=
BACKBONE ?=
DATA ?=
LAYOUT ?=
LIMIT ?=
PARAM ?=
PRECISION ?=
# where bench writes records and leaderboards: results/local/ is git-ignored, so a user's bench
# never touches the shipped toy reference in results/ (rebuilt by `make reference`)
RESULTS ?= results/local
REFERENCE_SEEDS ?= 0,1,2
export HF_HUB_OFFLINE ?= 1
ifneq ($(LAYOUT),)
export OODBENCH_LAYOUT := $(LAYOUT)
endif

BENCH_ARGS := --detector $(DETECTOR) --seeds $(SEEDS) --results-dir $(RESULTS) \
	$(if $(PROTOCOL),--protocol $(PROTOCOL)) $(if $(BACKBONE),--backbone $(BACKBONE)) \
	$(if $(DATA),--data-root $(DATA)) $(if $(LIMIT),--limit $(LIMIT)) \
	$(if $(PRECISION),--precision $(PRECISION)) $(foreach p,$(PARAM),--param $(p))

.PHONY: help bench test test-slow leaderboard reference lint venv clean-cache

# the header comment above, as the help text
help:
	@sed -n '1,/^$$/s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

bench: venv
	$(BIN)/oodbench bench $(BENCH_ARGS)

test: venv
	$(BIN)/python -m pytest -q

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

leaderboard: venv
	$(BIN)/oodbench leaderboard --plots --results-dir $(RESULTS)

# The shipped toy reference: every registered detector on the toy protocols, REFERENCE_SEEDS seeds,
# from a cold cache, one torch thread per process (records are reproducible on the same torch build
# and thread count), then the leaderboards: benchmarks/toy/suite.sh.
reference: venv
	PYTHON=$(BIN)/python SEEDS=$(REFERENCE_SEEDS) benchmarks/toy/suite.sh results

lint: venv
	$(BIN)/ruff check oodbench tests benchmarks

# the default cache ($$OODBENCH_CACHE, else $$XDG_CACHE_HOME/oodbench, else ~/.cache/oodbench), only
# when it carries oodbench's marker, and the test suite's own cache in the checkout
clean-cache: venv
	@dir=$$($(BIN)/python -c "from oodbench.features.cache import default_cache_dir as d; print(d())"); \
	if [ -f "$$dir/OODBENCH-CACHE.json" ]; then echo "removing $$dir"; rm -rf "$$dir"; \
	else echo "no oodbench cache at $$dir"; fi
	rm -rf .oodbench-cache
