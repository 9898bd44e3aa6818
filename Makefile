# What runs everything on a fresh machine (each target creates or reuses .venv by itself):
#   make report   regenerate every figure and table (runs the notebooks with papermill)
#   make test     the quick test suite (unit tests, every notebook executed once, jupytext pairs)
#   make check    every test (what CI runs: the quick suite and the heavy tests)
# Options: make report PROFILE=smoke|cpu|paper   ARGS="--synthetic --retrain ..."
# Outside CI: make colab-check   (Colab's TensorFlow/Keras/NumPy in .venv-colab, a few minutes)

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= cpu
ARGS ?=
BIN := $(VENV)/bin

.PHONY: report test check nbval benchmark model release sync clean-runs colab-check

# Colab's own versions, which the set-up cell must leave alone (colab/check_colab_stack.py).
# Python 3.13 as on Colab when the machine has it, else $(PYTHON) (the script says which).
COLAB_VENV ?= .venv-colab
COLAB_PYTHON ?= $(or $(shell for p in python3.13 $$(pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13; \
	do "$$p" -c "" 2>/dev/null && echo "$$p" && break; done),$(PYTHON))
COLAB_STACK ?= "tensorflow==2.20.*" "tf-keras==2.20.*" "keras==3.13.*" "numpy==2.1.*"

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

report: $(VENV)/.installed
	$(BIN)/nucseg report --profile $(PROFILE) $(ARGS)

# two worker processes (pytest-xdist), a test file per worker at a time: module fixtures and
# each notebook execution stay in one process; TEST_WORKERS=0 runs in this process.
# make test: the quick suite (every notebook executed once; TensorFlow eager in the test
#   processes; the tests marked `heavy` left out: see CONTRIBUTING.md)
# make check: every test, TensorFlow tracing graphs as a real run does (what CI runs)
TEST_WORKERS ?= 2
PYTEST = $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=20
test: $(VENV)/.installed
	NUCSEG_TEST_TF_EAGER=1 $(PYTEST) -m "not heavy" $(ARGS)

check: $(VENV)/.installed
	$(PYTEST) $(ARGS)

# the notebooks under nbval (each executed in place, lax: outputs not compared), on top of the
# one execution of each that `make test` already makes
nbval: $(VENV)/.installed
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env notebooks $(ARGS)

# reproduce the committed cpu model (about an hour on 2 cores) and its results file
model: $(VENV)/.installed
	$(BIN)/nucseg train --profile cpu --out runs/cpu --resume
	$(BIN)/nucseg publish --run runs/cpu --out models/cpu

# reproduce the committed release model (the cpu recipe on every labelled stage-1 image; its
# training time is in models/release/results.md) and its validation results
release: $(VENV)/.installed
	$(BIN)/nucseg train --profile release --out runs/release --resume
	$(BIN)/nucseg publish --run runs/release --out models/release

benchmark: $(VENV)/.installed
	$(BIN)/python -m pip install -q --disable-pip-version-check -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/run_benchmarks.py $(ARGS)

# after editing a notebook's .py (or .ipynb), bring its pair up to date
sync: $(VENV)/.installed
	$(BIN)/jupytext --sync notebooks/*.ipynb colab/*.ipynb

clean-runs:
	rm -rf runs/notebooks runs/notebooks-* runs/report-smoke runs/report-synthetic

# Outside CI: this repository against Colab's stack. Builds $(COLAB_VENV) with Colab's
# versions only (no requirements.txt), then runs what a Colab session does: the set-up's install
# (checking it changes none of them), the ImageNet download (refused cleanly offline), a paper
# training step at 64 px and a prediction of the committed model. `rm -rf .venv-colab` for a
# fresh install.
colab-check:
	@test -x $(COLAB_VENV)/bin/python || $(COLAB_PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install -q --disable-pip-version-check $(COLAB_STACK)
	$(COLAB_VENV)/bin/python colab/check_colab_stack.py $(ARGS)
