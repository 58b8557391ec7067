# wae-deploy: every set-up step lives here, so a fresh machine needs only `make demo` / `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned: on the project's machines 2.13.0 is a CPU build on local disk; an
# unpinned torch pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
EPOCHS ?= 20
THREADS ?=
REF    := models/resnet20.pt models/resnet20-resized.pt models/resnet20-dwt.pt \
          models/wae-resnet20.pt models/wae-resnet20-noenergy.pt
TRAIN  = $(BIN)/wae-deploy train --epochs $(EPOCHS) $(if $(THREADS),--threads $(THREADS))

.PHONY: install test demo train-reference bench lint clean
.DELETE_ON_ERROR:

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[openvino,dev]'
	touch $@

test: $(STAMP)
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/python -m wae_deploy.demo

# Trains the reference checkpoints on the CIFAR-10 train split (about an hour on 2 cores;
# `make -j2 train-reference THREADS=1` runs two at a time), then rewrites models/README.md.
train-reference: $(REF)
	$(BIN)/python -m wae_deploy.reference_table models > models/README.md.tmp && mv models/README.md.tmp models/README.md

models/resnet20.pt models/resnet20-resized.pt models/resnet20-dwt.pt: models/%.pt: | $(STAMP)
	$(TRAIN) --arch $* -o $@
models/wae-resnet20.pt: | $(STAMP)
	$(TRAIN) --arch wae-resnet20 --wae-epochs 3 -o $@
models/wae-resnet20-noenergy.pt: | $(STAMP)
	$(TRAIN) --arch wae-resnet20 --wae-epochs 3 --lambda 0 -o $@

lint: $(STAMP)
	$(BIN)/ruff check wae_deploy tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
