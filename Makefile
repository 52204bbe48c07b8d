# Two commands for a fresh machine: `make demo` and `make test` (both install first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.keyseg-installed
# The constraints file pins torch to the CPU wheel on this disk; PIP_CONSTRAINT makes
# pip apply it inside build environments too (an unpinned torch is a multi-GB CUDA build).
PIP_ENV := PIP_CONSTRAINT=$(CURDIR)/constraints.txt

DEMO_DIR      := runs/demo
DEMO_DATA     := $(DEMO_DIR)/data
DEMO_PREPARED := $(DEMO_DIR)/prepared
DEMO_SHARDS   := shards/demo

.PHONY: setup test demo bench clean-demo

setup: $(STAMP)

# Re-installs only when the project's requirements change: a no-op when up to date.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_ENV) $(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/keyseg demo-data $(DEMO_DATA)
	$(BIN)/keyseg prepare --data-dir $(DEMO_DATA) --out $(DEMO_PREPARED) --visualize 4
	$(BIN)/keyseg mine-keywords generate $(DEMO_DATA)/reason_seg/ReasonSeg/explanatory/train.json --backend heuristic
	$(BIN)/keyseg shard --prepared $(DEMO_PREPARED) --out $(DEMO_SHARDS) \
		--keywords $(DEMO_DATA)/reason_seg/ReasonSeg/explanatory_key/keyword_outputs.json
	$(BIN)/keyseg shards verify $(DEMO_SHARDS)
	$(BIN)/keyseg shards stats $(DEMO_SHARDS)

bench: setup
	$(BIN)/python benchmarks/bench_prepare.py
	$(BIN)/python benchmarks/bench_keywords.py

clean-demo:
	rm -rf $(DEMO_DIR) $(DEMO_SHARDS)
