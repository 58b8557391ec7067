# wae-deploy: every set-up step lives here, so a fresh machine needs only `make demo` / `make test`.
PYTHON ?= python3
comma  := ,
space  := $(subst ,, )
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned: on the project's machines 2.13.0 is a CPU build on local disk; an
# unpinned torch pulls a multi-GB CUDA build. Development gets every extra but [trt] (TensorRT
# does not install without an NVIDIA GPU); a device needs only the base install (README).
TORCH  ?= torch==2.13.0
EPOCHS ?= 20
THREADS ?=
# The suites' checkpoint files come from the one list of them, wae_deploy/core/registry.py (stdlib
# only: the system python reads it before the venv exists).
REGISTRY = $(or $(shell $(PYTHON) -m wae_deploy.core.registry files $(1)),$(error cannot list the reference models: $(PYTHON) -m wae_deploy.core.registry files $(1) failed))
REF    := $(addprefix models/,$(call REGISTRY,--tag cifar10))
TRAIN  = $(BIN)/wae-deploy train --epochs $(EPOCHS) $(if $(THREADS),--threads $(THREADS))
# The Imagenette family (VGG16-BN at 3/8 width, 128 pixels, 30 epochs): split models at a third
# of the plain nets' learning rate (three summed losses drive one backbone), stage 1 gently, so
# the Haar start is refined rather than lost. A state file left by an interrupted run is resumed.
NETTE_EPOCHS ?= 30
NETTE  := $(addprefix models/,$(call REGISTRY,--tag imagenette))
# Other recipes, rows of their own in models/README.md once trained (not shipped yet at 30 epochs).
NETTE_RECIPES := models/wae-vgg16-imagenette-kd.pt models/wae-vgg16-imagenette-random.pt \
          models/vgg16-imagenette-resized-kd.pt models/vgg16-imagenette-dwt-kd.pt
TRAIN_NETTE = $(BIN)/wae-deploy train --epochs $(NETTE_EPOCHS) --batch-size 64 --eval-every 5 --half-weights \
          $(if $(THREADS),--threads $(THREADS)) $(if $(wildcard $@.train-state.pt),--resume)
SPLIT_NETTE = --lr 0.0167 --wae-epochs 1 --wae-lr 3e-4 --joint-epochs 4
KD_NETTE    = --teacher models/vgg16-imagenette.pt
TABLE  = $(BIN)/python -m wae_deploy.training.reference_table models > models/README.md.tmp && mv models/README.md.tmp models/README.md

.PHONY: install test demo train-reference train-imagenette train-imagenette-recipes bench gpu-check report-check lint mutation clean
.DELETE_ON_ERROR:

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[train,openvino,dev]'
	touch $@

# One pytest worker per core (xdist); each test file stays on one worker, so a file's trained
# fixtures are made once.
test: $(STAMP)
	$(BIN)/pytest -q -n auto --dist loadfile --no-loadscope-reorder

# The main job on the embedded default: the Imagenette WAE-VGG16 and its full-resolution
# baseline, exported, built for ONNX Runtime and OpenVINO in FP32 and INT8, scored on all 3,925
# val photos and timed interleaved; it ends with the headline (top-1 change and speed-up).
# Artifacts and reports land in build/demo/.
DEMO        := $(addprefix models/,$(call REGISTRY,--tag imagenette --role wae --role baseline))
DEMO_WAE    := $(firstword $(DEMO))
DEMO_MODELS := $(subst $(space),$(comma),$(DEMO))
demo: $(STAMP)
	@test -f $(DEMO_WAE) || { echo "$(DEMO_WAE) is missing: run make train-imagenette"; exit 2; }
	mkdir -p build/demo
	$(BIN)/wae-deploy inspect $(DEMO_WAE) -o build/demo/wae-vgg16-imagenette-inspect.png
	$(BIN)/wae-deploy bench --suite imagenette --target ort --target openvino --precision fp32,int8 \
	  --models $(DEMO_MODELS) --min-time 1.5 --workdir build/demo --markdown build/demo/report.md \
	  --plot build/demo/report.png --out build/demo/results.json

# Trains the reference checkpoints on the CIFAR-10 train split (about an hour on 2 cores;
# `make -j2 train-reference THREADS=1` runs two at a time), then rewrites models/README.md.
train-reference: $(REF)
	$(TABLE)

models/resnet20.pt models/resnet20-resized.pt models/resnet20-dwt.pt: models/%.pt: | $(STAMP)
	$(TRAIN) --arch $* -o $@
models/wae-resnet20.pt: | $(STAMP)
	$(TRAIN) --arch wae-resnet20 --wae-epochs 3 -o $@
models/wae-resnet20-noenergy.pt: | $(STAMP)
	$(TRAIN) --arch wae-resnet20 --wae-epochs 3 --lambda 0 -o $@

# The Imagenette reference family (five checkpoints, about two and a quarter hours on 2 cores with
# `make -j2 train-imagenette THREADS=1`), then rewrites models/README.md.
train-imagenette: $(NETTE)
	$(TABLE)
train-imagenette-recipes: $(NETTE_RECIPES)
	$(TABLE)

models/vgg16-imagenette.pt models/vgg16-imagenette-resized.pt: models/%.pt: | $(STAMP)
	$(TRAIN_NETTE) --arch $* --lr 0.05 -o $@
models/vgg16-imagenette-dwt.pt: | $(STAMP)
	$(TRAIN_NETTE) --arch vgg16-imagenette-dwt --lr 0.0167 -o $@
models/wae-vgg16-imagenette.pt: | $(STAMP)
	$(TRAIN_NETTE) --arch wae-vgg16-imagenette $(SPLIT_NETTE) -o $@
models/wae-vgg16-imagenette-noenergy.pt: | $(STAMP)
	$(TRAIN_NETTE) --arch wae-vgg16-imagenette $(SPLIT_NETTE) --lambda 0 -o $@
# Distillation from the trained baseline, for the WAE and, for a fair comparison, the resized and DWT inputs.
models/wae-vgg16-imagenette-kd.pt: | models/vgg16-imagenette.pt $(STAMP)
	$(TRAIN_NETTE) --arch wae-vgg16-imagenette $(SPLIT_NETTE) $(KD_NETTE) -o $@
models/vgg16-imagenette-resized-kd.pt: | models/vgg16-imagenette.pt $(STAMP)
	$(TRAIN_NETTE) --arch vgg16-imagenette-resized --lr 0.05 $(KD_NETTE) -o $@
models/vgg16-imagenette-dwt-kd.pt: | models/vgg16-imagenette.pt $(STAMP)
	$(TRAIN_NETTE) --arch vgg16-imagenette-dwt --lr 0.0167 $(KD_NETTE) -o $@
models/wae-vgg16-imagenette-random.pt: | $(STAMP)
	$(TRAIN_NETTE) --arch wae-vgg16-imagenette --lr 0.0167 --wae-epochs 1 --wae-lr 3e-3 --joint-epochs 4 --wae-init random -o $@

# The recorded suites (quiet machine, about an hour): rewrites benchmarks/cpu-*.json and *.md.
bench: $(STAMP)
	$(BIN)/wae-deploy bench --suite imagenette --target ort --target openvino --precision fp32,int8 --batch 1,8 \
	  --min-time 2 --profile --workdir build/bench-imagenette \
	  --out benchmarks/cpu-imagenette.json --markdown benchmarks/cpu-imagenette.md --plot benchmarks/cpu-imagenette.png
	$(BIN)/python benchmarks/int8_parts.py benchmarks/cpu-imagenette.json benchmarks/int8-parts-imagenette.json
	$(BIN)/wae-deploy bench --suite cifar10 --target ort --target openvino --batch 1,8,64 --workdir build/bench \
	  --out benchmarks/cpu-cifar10.json --markdown benchmarks/cpu-cifar10.md --plot benchmarks/cpu-cifar10.png
	$(BIN)/wae-deploy bench --suite paper --target ort --target openvino --workdir build/bench-paper \
	  --out benchmarks/cpu-paper.json --markdown benchmarks/cpu-paper.md
	$(BIN)/wae-deploy bench --suite paper --models wae-vgg16,vgg16 --target ort --target openvino \
	  --precision fp32,int8 --batch 1,8 --min-time 2 --profile --workdir build/bench-paper \
	  --out benchmarks/cpu-paper-int8.json --markdown benchmarks/cpu-paper-int8.md
	$(BIN)/python benchmarks/int8_parts.py benchmarks/cpu-paper-int8.json benchmarks/int8-parts-paper.json

# On a machine with an NVIDIA GPU, TensorRT and pycuda: versions, the GPU tests, one TensorRT bench (< 5 min).
gpu-check:
	benchmarks/gpu_check.sh $(BIN)/python

# The trend page of tests/data/history (recorded runs, benchmarks/history_fixture.py) opened in headless
# Chromium (Debian: apt-get install chromium): no console error, no network request, and a screenshot
# (build/report-check/trend.png; docs/trend.png is a copy). CHROMIUM names another binary.
CHROMIUM ?= chromium
report-check: $(STAMP)
	$(BIN)/wae-deploy report tests/data/history -o build/report-check/site
	$(BIN)/python benchmarks/report_check.py --chromium $(CHROMIUM) build/report-check/site/index.html \
	  --screenshot build/report-check/trend.png

# Mutation testing of the functions that carry the numbers (accuracy scoring, the INT8 bound, export
# verification, atomic writes, the bench's latency, results and gate), each mutant against the fast
# tests written for it ([tool.mutmut] in pyproject.toml). Not part of `make test`: about 25 minutes
# on 2 cores. Score and survivors: benchmarks/mutation.json, reasons in benchmarks/mutation.md.
MUTATE := 'wae_deploy.runtime.metrics.*' 'wae_deploy.convert.build.x_build__*' 'wae_deploy.training.export.x_parity__*' \
          'wae_deploy.training.export.x__passes__*' 'wae_deploy.training.export.x_verified__*' 'wae_deploy.core.atomic.*' \
          'wae_deploy.runtime.latency.*' 'wae_deploy.benchmark.results.*' 'wae_deploy.benchmark.gate.*'
mutation: $(STAMP)
	env -u PYTHONPATH $(BIN)/mutmut run $(MUTATE)
	$(BIN)/python benchmarks/mutation_score.py $(MUTATE) > benchmarks/mutation.json

lint: $(STAMP)
	$(BIN)/ruff check wae_deploy tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info mutants
