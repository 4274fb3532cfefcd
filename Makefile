# The two commands of the README:
#   make run    set everything up, then run the E1 regularisation ablation offline (embedded data)
#   make test   set everything up, then run the test suite
# Setup is idempotent: the virtual environment is rebuilt only when a requirements file changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Tests run in two processes (pytest-xdist); --dist loadscope keeps each test module, and so each
# notebook's cells, in order in one process.
XDIST := -n 2 --dist loadscope

.PHONY: setup run test test-fast clean-reports

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# medmnist without torch/torchvision: only its registry is used (see requirements-nodeps.txt).
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The E1 ablation as a papermill batch of notebooks/01-cnn-regularisation.ipynb, offline.
run: setup
	$(PY) -m lab.ablation --workers 2

# Unit tests, then every notebook in its quick setting under nbval (checked cells compared with
# their stored outputs). Notebook run records go to build/, not to reports/.
test: setup
	rm -rf build/nbval
	$(PY) -m lab.notebooks prepare build/nbval
	LAB_REPORTS_DIR=$(CURDIR)/build/nbval-reports $(PY) -m pytest tests build/nbval $(XDIST) \
		--nbval-lax --nbval-sanitize-with notebooks/nbval_sanitize.cfg --nbval-kernel-name python3 \
		--nbval-cell-timeout 600

# While working: every module of lab touched in a few minutes; the heavy checks (the backbone
# table, subprocess batches and workers, kill-and-resume, the notebooks) are left to `make test`.
test-fast: setup
	$(PY) -m pytest tests -m "not slow" $(XDIST)

# Folders of runs killed before they finished, whose process is gone (a live run's is kept).
clean-reports: setup
	$(PY) -c "from lab.records import clean_partial; print(clean_partial(), 'interrupted run folder(s) removed')"
