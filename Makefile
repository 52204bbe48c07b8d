# Two commands for a fresh machine: `make demo` and `make test` (both install first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.keyseg-installed
# The constraints file pins torch to the CPU wheel on this disk; PIP_CONSTRAINT makes
# pip apply it inside build environments too (an unpinned torch is a multi-GB CUDA build).
PIP_ENV := PIP_CONSTRAINT=$(CURDIR)/constraints.txt

# ---- the demo: every stage is a file target, so a second `make demo` skips what is
# up to date and a changed input re-runs only what depends on it.
DEMO_DIR      ?= runs/demo
DEMO_SHARDS   ?= shards/demo
DEMO_IMAGES   ?= 400
DEMO_TRAIN_ARGS ?=
DEMO_DATA     := $(DEMO_DIR)/data
DEMO_PREPARED := $(DEMO_DIR)/prepared
DEMO_KEYWORDS := $(DEMO_DATA)/reason_seg/ReasonSeg/explanatory_key/keyword_outputs.json
DEMO_TRAIN    := $(DEMO_DIR)/train
DEMO_CONFIG   := keyseg/training/configs/demo.yaml
DEMO_SPLITS   := --split reasonseg:val --split reasonseg:test
# refCOCO val has gold keywords (the expression is a refer sample's keyword): the trained
# model's keyword-match rate is measured there.
DEMO_KEYWORD_SPLIT := --split refcoco:val
TIMED          = $(BIN)/keyseg demo-report time --stage $(1) --times-dir $(DEMO_DIR)/times --

.PHONY: setup test demo bench clean-demo reproduce reproduce-check readme-pictures

setup: $(STAMP)

# Re-installs only when the project's requirements change: a no-op when up to date.
$(STAMP): pyproject.toml constraints.txt
	@test -x /usr/bin/chromedriver || { echo "installing Debian's chromium and chromium-driver (browser tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_ENV) $(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

test: setup
	$(BIN)/python -m pytest -q

demo: setup $(DEMO_DIR)/summary.json

$(DEMO_DATA)/demo_data_config.json: | $(STAMP)
	$(call TIMED,demo-data) $(BIN)/keyseg demo-data --out $(DEMO_DATA) --images $(DEMO_IMAGES)

$(DEMO_PREPARED)/prepare_stats.json: $(DEMO_DATA)/demo_data_config.json
	$(call TIMED,prepare) $(BIN)/keyseg prepare --data-dir $(DEMO_DATA) --out $(DEMO_PREPARED) --visualize 4

$(DEMO_KEYWORDS): $(DEMO_DATA)/demo_data_config.json
	$(call TIMED,mine-keywords) $(BIN)/keyseg mine-keywords generate \
		--input $(DEMO_DATA)/reason_seg/ReasonSeg/explanatory/train.json --backend heuristic --out $@

$(DEMO_SHARDS)/index.json: $(DEMO_PREPARED)/prepare_stats.json $(DEMO_KEYWORDS)
	$(call TIMED,shard) $(BIN)/keyseg shard --prepared $(DEMO_PREPARED) --out $(DEMO_SHARDS) --keywords $(DEMO_KEYWORDS)
	$(call TIMED,verify) $(BIN)/keyseg shards verify --shards $(DEMO_SHARDS)
	$(BIN)/keyseg shards stats --shards $(DEMO_SHARDS)

$(DEMO_DIR)/untrained/export/config.json: $(DEMO_SHARDS)/index.json $(DEMO_CONFIG)
	$(BIN)/keyseg train --config demo --shards $(DEMO_SHARDS) --out $(DEMO_DIR)/untrained --max-steps 0 $(DEMO_TRAIN_ARGS)

$(DEMO_DIR)/eval_before/metrics.json: $(DEMO_DIR)/untrained/export/config.json
	$(call TIMED,evaluate-before) $(BIN)/keyseg evaluate --shards $(DEMO_SHARDS) $(DEMO_SPLITS) \
		--model $(DEMO_DIR)/untrained/export --out $(DEMO_DIR)/eval_before

$(DEMO_TRAIN)/export/config.json: $(DEMO_SHARDS)/index.json $(DEMO_CONFIG)
	rm -rf $(DEMO_TRAIN)
	$(call TIMED,train) $(BIN)/keyseg train --config demo --shards $(DEMO_SHARDS) --out $(DEMO_TRAIN) $(DEMO_TRAIN_ARGS)

$(DEMO_DIR)/eval_after/metrics.json: $(DEMO_TRAIN)/export/config.json
	$(call TIMED,evaluate-after) $(BIN)/keyseg evaluate --shards $(DEMO_SHARDS) $(DEMO_SPLITS) $(DEMO_KEYWORD_SPLIT) \
		--model $(DEMO_TRAIN)/export --out $(DEMO_DIR)/eval_after --visualize 6

$(DEMO_DIR)/summary.json: $(DEMO_DIR)/eval_before/metrics.json $(DEMO_DIR)/eval_after/metrics.json
	$(BIN)/keyseg demo-report summary --demo-dir $(DEMO_DIR)

# The README's pictures (docs/images/) from the last `make demo`, with screenshots of
# `keyseg chat` and `keyseg serve` (headless Chromium) on the trained demo model.
readme-pictures: demo
	$(BIN)/keyseg demo-report pictures --demo-dir $(DEMO_DIR) --shards $(DEMO_SHARDS) --out docs/images
	$(BIN)/keyseg demo-report screenshots --demo-dir $(DEMO_DIR) --out docs/images

clean-demo:
	rm -rf $(DEMO_DIR) $(DEMO_SHARDS)

bench: setup
	$(BIN)/python benchmarks/bench_prepare.py
	$(BIN)/python benchmarks/bench_semseg.py
	$(BIN)/python benchmarks/bench_keywords.py
	$(BIN)/python benchmarks/bench_loader.py

# ---- the KeySeg recipe on real data and weights (GPU machines). PRESET keyseg-7b-release
# (default) is the release's training run, keyseg-7b the paper's method (docs/presets.md).
# RECIPE keyseg (default) trains PRESET from LISA-7B-v1; lisa trains LISA itself (lisa-7b)
# from LLAVA_DIR with SAM_CKPT on LISA's whole mixture (DATA_DIR in LISA's layout);
# lisa+keyseg trains PRESET from that LISA. `make reproduce-check RECIPE=...` lists its needs.
# `make reproduce-check` validates every path first: DATA_DIR with reason_seg/ and
# refer_seg/ (reference layouts), LISA_CKPT (LISA-7B-v1 folder), CLIP_DIR
# (clip-vit-large-patch14), SAM_CKPT (sam_vit_h_4b8939.pth: required by keyseg-7b-release),
# LLM_BASE_URL + LLM_MODEL (keyword mining: both or neither; with neither, the published
# keyword_outputs.json is validated).
DATA_DIR     ?=
LISA_CKPT    ?=
CLIP_DIR     ?=
SAM_CKPT     ?=
LLM_BASE_URL ?=
LLM_MODEL    ?=
GPUS         ?= 8
PRESET       ?= keyseg-7b-release
RECIPE       ?= keyseg
LLAVA_DIR    ?=
REPRO_DIR    ?= runs/reproduce
REPRO_SHARDS ?= shards/keyseg
REPRO_KEYWORDS := $(REPRO_DIR)/keyword_outputs.json
REPRO_LISA   := $(REPRO_DIR)/lisa
REPRO_MODEL  := $(if $(filter lisa,$(RECIPE)),$(REPRO_LISA),$(REPRO_DIR)/train)/export

reproduce-check: setup
	$(BIN)/keyseg reproduce-check --data-dir "$(DATA_DIR)" --lisa-ckpt "$(LISA_CKPT)" --clip-dir "$(CLIP_DIR)" --sam-ckpt "$(SAM_CKPT)" --gpus $(GPUS) --llm-base-url "$(LLM_BASE_URL)" --llm-model "$(LLM_MODEL)" --preset "$(PRESET)" --recipe "$(RECIPE)" --llava-dir "$(LLAVA_DIR)"

reproduce: reproduce-check
	$(BIN)/keyseg prepare --data-dir $(DATA_DIR) --out $(REPRO_DIR)/prepared
ifneq ($(RECIPE),lisa)
ifneq ($(LLM_MODEL),)
	$(BIN)/keyseg mine-keywords generate --input $(DATA_DIR)/reason_seg/ReasonSeg/explanatory/train.json \
		--base-url "$(LLM_BASE_URL)" --model "$(LLM_MODEL)" --out $(REPRO_KEYWORDS)
else
	$(BIN)/keyseg mine-keywords validate --keywords $(DATA_DIR)/reason_seg/ReasonSeg/explanatory_key/keyword_outputs.json \
		--fix $(REPRO_KEYWORDS)
endif
endif
	$(BIN)/keyseg shard --prepared $(REPRO_DIR)/prepared --out $(REPRO_SHARDS) $(if $(filter lisa,$(RECIPE)),,--keywords $(REPRO_KEYWORDS))
	$(BIN)/keyseg shards verify --shards $(REPRO_SHARDS)
ifneq ($(RECIPE),keyseg)
	$(BIN)/keyseg train --config lisa-7b --shards $(REPRO_SHARDS) --out $(REPRO_LISA) --gpus $(GPUS) \
		--resume auto init.llava=$(LLAVA_DIR) init.vision=$(CLIP_DIR) init.sam=$(SAM_CKPT)
endif
ifneq ($(RECIPE),lisa)
	$(BIN)/keyseg train --config $(PRESET) --shards $(REPRO_SHARDS) --out $(REPRO_DIR)/train --gpus $(GPUS) \
		--resume auto init.lisa=$(if $(filter keyseg,$(RECIPE)),$(LISA_CKPT),$(REPRO_LISA)/export) \
		init.vision=$(CLIP_DIR) $(if $(SAM_CKPT),init.sam=$(SAM_CKPT),)
endif
	$(BIN)/keyseg evaluate --shards $(REPRO_SHARDS) --split reasonseg:val --split reasonseg:test \
		--split refcoco:val --split refcoco:testA --split refcoco:testB --split refcoco+:val \
		--split refcoco+:testA --split refcoco+:testB --split refcocog:val --split refcocog:test \
		--model $(REPRO_MODEL) --out $(REPRO_DIR)/eval --gpus $(GPUS) --visualize 20
