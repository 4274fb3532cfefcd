# The two commands of the README:
#   make run    set everything up, then run the E1 regularisation ablation offline (embedded data)
#   make test   set everything up, then run the test suite
# and, for working in notebooks, `make notebook` (JupyterLab on notebooks/, the kit's kernel);
# `make docs` serves the manual (docs/, mkdocs.yml), which `make test` builds with --strict.
# Setup is idempotent: the virtual environment is rebuilt only when a requirements file changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# The kit's Jupyter kernel, registered inside the venv by `make setup`: JupyterLab, papermill
# batches (lab.studies.batch's default kernel) and nbval all run notebooks in it, by this name.
KERNEL := lab
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/$(KERNEL)/kernel.json

# Tests run in two processes (pytest-xdist); --dist loadscope keeps each test module, and so each
# notebook's cells, in order in one process.
XDIST := -n 2 --dist loadscope
# The slowest tests and notebook cells are listed at the end of a run: where make test's time goes.
DURATIONS := --durations=25
NBVAL := --nbval-lax --nbval-sanitize-with notebooks/nbval_sanitize.cfg --nbval-cell-timeout 600
# The notebooks nbval runs open no TensorBoard (their %tensorboard cells: see lab.system.colab).
NO_TENSORBOARD := LAB_TENSORBOARD_INLINE=0

.PHONY: setup setup-instance run test test-seed test-fast test-colab notebook docs docs-build dist clean-reports

setup: $(STAMP) $(KERNEL_SPEC)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# medmnist without torch/torchvision: only its registry is used (see requirements-nodeps.txt).
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The instance-segmentation extra (E7: TensorFlow Model Garden's Mask R-CNN, about 235 MB), kept
# out of the core install; without its dependencies, which would replace TensorFlow (see
# requirements-instance.txt). `make test` installs it, so that E7's tests and notebook run.
INSTANCE_STAMP := $(VENV)/.instance-installed
$(INSTANCE_STAMP): $(STAMP) requirements-instance.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-instance.txt
	touch $(INSTANCE_STAMP)

setup-instance: setup $(INSTANCE_STAMP)

$(KERNEL_SPEC): $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python ($(KERNEL))"

# The E1 ablation as a papermill batch of notebooks/01-cnn-regularisation.ipynb, offline, every
# configuration with 3 seeds (one notebook each; benchmarks/make_run.py times it).
run: setup
	$(PY) -m lab.studies.ablation --workers 2 --seeds 3 --epochs 15

# Unit tests, then every notebook in its quick setting under nbval (checked cells compared with
# their stored outputs), with the instance-segmentation extra (E7). Notebook run records go to
# build/, not to reports/.
test: setup setup-instance docs-build
	rm -rf build/nbval build/nbval-reports
	$(PY) -m lab.studies.notebooks prepare build/nbval
	$(NO_TENSORBOARD) LAB_REPORTS_DIR=$(CURDIR)/build/nbval-reports $(PY) -m pytest tests build/nbval $(XDIST) \
		$(NBVAL) --nbval-kernel-name $(KERNEL) $(DURATIONS)
	# Every status the notebooks' quick runs recorded must hold by a wide margin, or another CPU,
	# thread count or seed could flip it (lab.studies.notebooks.unclear_outcome names the run and why).
	$(PY) -m lab.studies.notebooks check-runs build/nbval-reports

# The quick notebooks once more with another seed (CI runs it after make test): their checked
# outputs must not depend on the seed, and every run's status must again be clear-cut.
SEED ?= 1
test-seed: setup setup-instance
	rm -rf build/nbval-seed build/nbval-seed-reports
	$(PY) -m lab.studies.notebooks prepare build/nbval-seed --seed $(SEED)
	$(NO_TENSORBOARD) LAB_REPORTS_DIR=$(CURDIR)/build/nbval-seed-reports $(PY) -m pytest build/nbval-seed $(XDIST) \
		$(NBVAL) --nbval-kernel-name $(KERNEL)
	$(PY) -m lab.studies.notebooks check-runs build/nbval-seed-reports

# While working: every module of lab touched in a few minutes; the heavy checks (the backbone
# table, subprocess batches and workers, kill-and-resume, the notebooks) are left to `make test`.
test-fast: setup
	$(PY) -m pytest tests -m "not slow" $(XDIST) $(DURATIONS)

# JupyterLab (requirements-notebook.txt, kept out of `make test`'s setup) on notebooks/; the
# notebooks' "Python (lab)" kernel is the kit's venv. JUPYTER_ARGS passes options (--no-browser...).
NOTEBOOK_STAMP := $(VENV)/.notebook-installed
$(NOTEBOOK_STAMP): $(STAMP) requirements-notebook.txt
	# -c requirements.txt: JupyterLab's dependencies may not move the kit's pinned packages.
	$(PY) -m pip install --quiet -r requirements-notebook.txt -c requirements.txt
	touch $(NOTEBOOK_STAMP)

notebook: setup $(NOTEBOOK_STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks --MappingKernelManager.default_kernel_name=$(KERNEL) \
		$(JUPYTER_ARGS)

# The manual as a site (mkdocs.yml, docs/; requirements-docs.txt, kept out of the kit's own
# requirements): `make docs` serves it (DOCS_ARGS passes options: --dev-addr 0.0.0.0:8000...);
# `make docs-build`, part of `make test`, builds it into build/site with --strict, so a broken link
# or anchor, a module missing from docs/architecture.md or a stale API reference fails. Nothing is
# imported to build the API reference (static analysis), so it needs no TensorFlow.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) requirements-docs.txt
	# -c requirements.txt: the documentation tools may not move the kit's pinned packages.
	$(PY) -m pip install --quiet -r requirements-docs.txt -c requirements.txt
	touch $(DOCS_STAMP)

# Material for MkDocs prints a banner about MkDocs 2 on every command; it says nothing about the site.
docs: setup $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve $(DOCS_ARGS)

docs-build: setup $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

# The Colab lane: Colab's preinstalled versions (ci/colab-constraints.txt) in a Python 3.13 venv,
# the kit installed by the notebooks' own install cell (ci/install_cell.py runs it; it pins every
# package already there), the test tools at requirements.txt's pins but never replacing a package
# already there, then notebooks E1 and E6 under nbval as `make test` runs them (in the python3
# kernel, as in Colab) and the fast unit tests. COLAB_PYTHON: a Python 3.13 interpreter (default:
# pyenv's 3.13, else python3.13 on the PATH). The venv is rebuilt when the constraints change; the
# kit is reinstalled (by the cell again) when its sources, pyproject.toml or the cell change.
COLAB_DIR ?= build/colab
COLAB_VENV := $(COLAB_DIR)/venv
COLAB_PY := $(COLAB_VENV)/bin/python
COLAB_BASE := $(COLAB_VENV)/.colab-packages
COLAB_KIT := $(COLAB_VENV)/.kit-installed
COLAB_PYTHON ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13) \
	$(shell command -v python3.13 2>/dev/null))
COLAB_NOTEBOOKS := 01-cnn-regularisation.ipynb 06-semantic-segmentation.ipynb
TEST_TOOLS := papermill|nbval|ipykernel|pytest|pytest-xdist|execnet

$(COLAB_BASE): ci/colab-constraints.txt
	@"$(COLAB_PYTHON)" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null || { \
		echo "make test-colab needs Python 3.13 (Colab's); found '$(COLAB_PYTHON)'." \
		"Install one (pyenv install 3.13) or pass COLAB_PYTHON=/path/to/python3.13." >&2; exit 1; }
	rm -rf $(COLAB_VENV)
	"$(COLAB_PYTHON)" -m venv $(COLAB_VENV)
	$(COLAB_PY) -m pip install --quiet -r ci/colab-constraints.txt
	touch $(COLAB_BASE)

$(COLAB_KIT): $(COLAB_BASE) pyproject.toml requirements.txt ci/install_cell.py ci/check_versions.py \
		notebooks/$(firstword $(COLAB_NOTEBOOKS)) $(shell find lab -name '*.py')
	$(COLAB_PY) -m pip uninstall --quiet --yes lab
	# As a student without the repository's address: no LAB_REPO, the wheel "uploaded" beside the kernel.
	rm -rf $(COLAB_DIR)/dist
	$(COLAB_PY) -m pip wheel --quiet --no-deps --wheel-dir $(COLAB_DIR)/dist .
	cd $(COLAB_DIR)/dist && env -u LAB_REPO $(abspath $(COLAB_PY)) $(CURDIR)/ci/install_cell.py \
		$(CURDIR)/notebooks/$(firstword $(COLAB_NOTEBOOKS))
	$(COLAB_PY) -m pip list --format=freeze > $(COLAB_DIR)/installed.txt
	grep -E '^($(TEST_TOOLS))==' requirements.txt > $(COLAB_DIR)/test-tools.txt
	$(COLAB_PY) -m pip install --quiet -r $(COLAB_DIR)/test-tools.txt -c $(COLAB_DIR)/installed.txt
	# Colab's packages must still be at Colab's versions, or the lane would test something else.
	$(COLAB_PY) ci/check_versions.py ci/colab-constraints.txt
	touch $(COLAB_KIT)

test-colab: $(COLAB_KIT)
	rm -rf $(COLAB_DIR)/nbval
	$(COLAB_PY) -m lab.studies.notebooks prepare $(COLAB_DIR)/nbval
	$(NO_TENSORBOARD) LAB_REPORTS_DIR=$(CURDIR)/$(COLAB_DIR)/nbval-reports $(COLAB_PY) -m pytest tests \
		$(addprefix $(COLAB_DIR)/nbval/,$(COLAB_NOTEBOOKS)) -m "not slow" $(XDIST) $(NBVAL) \
		--nbval-kernel-name python3

# The kit as a wheel in dist/, for a Colab session without the repository's address: upload it to
# the session or keep it in Google Drive's MyDrive/lab/, and the notebooks' install cell finds it.
dist: setup
	rm -rf dist
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist/lab-*.whl

# Folders of runs killed before they finished, whose process is gone (a live run's is kept).
clean-reports: setup
	$(PY) -c "from lab.runs.records import clean_partial; print(clean_partial(), 'interrupted run folder(s) removed')"
