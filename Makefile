# The commands of the README; CI (.ci/run) calls the same targets.
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint bench chaos clean

help:
	@echo "make venv   create .venv and install Fleetline with its dev and bench extras"
	@echo "make demo   run a research brief end to end on a local fleet (no Redis needed);"
	@echo "            KIND=document_pipeline, KIND=debate or KIND=notify runs that example kind instead"
	@echo "make test   run the test suite"
	@echo "make lint   ruff check, ruff format --check, mypy"
	@echo "make bench  run the benchmarks (QUICK=1 for a short run)"
	@echo "make chaos  faults against a live fleet, every job and cent counted (QUICK=1: < 10 min)"
	@echo "make clean  remove caches and .fleetline/ (keeps .venv)"

venv: $(STAMP)

# The strict editable install links each module into build/__editable__*/ (the lenient one
# is an import hook mypy cannot follow), so a module added later appears only after a
# reinstall: reinstall when pyproject.toml or the list of modules changed.
MODULES := $(sort $(shell find producer workers shared beat -name '*.py' -o -name '*.lua'))
MODULE_LIST := $(VENV)/.modules

$(MODULE_LIST): FORCE
	@mkdir -p $(VENV)
	@echo '$(MODULES)' | cmp -s - $@ || echo '$(MODULES)' > $@

$(STAMP): pyproject.toml $(MODULE_LIST)
	test -x $(BIN)/python || python3 -m venv $(VENV)
	rm -rf build/__editable__.*  # links to modules that are gone would linger
	$(BIN)/pip install -e '.[dev,bench,embedded]' --config-settings editable_mode=strict
	touch $@

.PHONY: FORCE
FORCE:

demo: venv
	$(BIN)/fleetline demo $(if $(KIND),--kind $(KIND),)

test: venv
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv
	$(BIN)/python -m ops.bench $(if $(QUICK),--quick,)
	$(BIN)/python -m ops.bench.savings $(if $(QUICK),--jobs 4,)

chaos: venv
	$(BIN)/python -m ops.chaos $(if $(QUICK),--quick,)

clean:
	rm -rf .fleetline .mypy_cache .ruff_cache .pytest_cache build dist
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
