# harkd developer entry points. `make demo` and `make test` are the two commands in README.md.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.harkd-installed
RUNTIME_STAMP := $(VENV)/.harkd-runtime-installed

.PHONY: demo test lint typecheck unit system venv model model-smoke bench clean

system:
	bash packaging/install-system-deps.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[train,dev,systemd]'
	touch $(STAMP) $(RUNTIME_STAMP)

venv: $(STAMP)

# The demo needs only the on-device runtime (no PyTorch): what a Pi installs.
$(RUNTIME_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $(RUNTIME_STAMP)

demo: system $(RUNTIME_STAMP)
	$(BIN)/python -m daemon.demo

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy daemon training contacts_sync rescorer bench

unit: venv
	$(BIN)/pytest -q

test: system lint typecheck unit

model: system venv
	bash training/setup_system.sh
	$(BIN)/python -m training.recipe --config training/configs/recognizer.yaml --install models/recognizer

model-smoke: venv
	$(BIN)/python -m training.recipe --config training/configs/recognizer-smoke.yaml

bench: venv
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.recognizer

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
