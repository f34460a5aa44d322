# `make run` and `make test` each build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: run test test-slow lint install clean bench

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	# the CPU build of torch on local disk; an unpinned torch would pull CUDA
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[train,flower,dev]" "$(TORCH)"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/fedopt simulate --config experiments/configs/quick.yaml --out results/quick --compare-fedlora --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

# also the slow end-to-end tests (Flower deployments, Ray, long solver sweeps)
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q --run-slow

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
