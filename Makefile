# Two commands do everything on a fresh machine (each creates or reuses .venv by itself):
#   make report   regenerate every figure and table (runs the notebooks with papermill)
#   make test     run the test suite (unit tests, notebooks under nbval, jupytext pairs)
# Options: make report PROFILE=smoke|cpu|paper   ARGS="--synthetic --retrain ..."

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= cpu
ARGS ?=
BIN := $(VENV)/bin

.PHONY: report test benchmark model sync clean-runs

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

report: $(VENV)/.installed
	$(BIN)/nucseg report --profile $(PROFILE) $(ARGS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(ARGS)

# reproduce the committed cpu model (about an hour on 2 cores) and its results file
model: $(VENV)/.installed
	$(BIN)/nucseg train --profile cpu --out runs/cpu --resume
	$(BIN)/nucseg publish --run runs/cpu --out models/cpu

benchmark: $(VENV)/.installed
	$(BIN)/python -m pip install -q --disable-pip-version-check -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/run_benchmarks.py $(ARGS)

# after editing a notebook's .py (or .ipynb), bring its pair up to date
sync: $(VENV)/.installed
	$(BIN)/jupytext --sync notebooks/*.ipynb colab/*.ipynb

clean-runs:
	rm -rf runs/notebooks runs/report-smoke
