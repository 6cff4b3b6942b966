# xfer — the table of contents. `make report` and `make test` do all set-up on a fresh machine.
#   make report [PARAMS=params/x.yaml] [SET="seeds=[1] ..."]   run the grid (skips finished runs), render its report
#     SET: overrides, KEY=VALUE items separated by blanks; a value may hold blanks and ';' (SET="seeds=[1, 2]
#     target.size=50"). It reaches the runner as the environment variable XFER_SET, never through the shell.
#   make plan   [PARAMS=...]             validate and print the grid, train nothing
#   make run    [PARAMS=...] [EXECUTOR=slurm] [DETACH=1] [JOBS=N]   run what is not done, here (N at once) or on Slurm
#   make status [PARAMS=...]             done / running / pending / failed per phase (Slurm job ids)
#   make fetch  [PARAMS=...]             download a grid's hub datasets and model (e.g. on a login node)
#   make tensorboard [PARAMS=...]        TensorBoard on the grid's training curves (http://localhost:6006)
#   make test   [TEST_WORKERS=2]         the test suite (real data from ../shared, tiny models), on 2 xdist workers
#   make test-long                       the study in miniature on Slurm through the hub loaders (slow)
#   make model                           convert the offline mE5-small checkpoint (once per machine)
#   make data                            unpack ../shared/data into data/raw (if XFER_DATA_DIR is unset)
#   make bench                           speed figures as JSON in bench/ (loops compared in turns)
#   make gpu-check                       on a GPU: bench + demo.yaml's first seed within 10 min, bench/gpu-check.json
#   make carry  [PARAMS=...]             pack a study's data and model rows for an offline compute node in .carry/
#   make lab                             JupyterLab on the notebooks
#   (with a conda environment other than base active, every target uses it instead of .venv)

PARAMS ?= params/cpu.yaml
SET ?=
export XFER_SET := $(value SET)
unexport SET
export XFER_PARAMS := $(value PARAMS)
export XFER_EXECUTOR := $(value EXECUTOR)
export XFER_DETACH := $(value DETACH)
export XFER_JOBS := $(value JOBS)
# the Python that runs everything: an activated conda environment other than base (made from
# environment.yml, which installs xfer into it), else the project's own .venv, built on first use
CONDA_ENV := $(filter-out base,$(CONDA_DEFAULT_ENV))
ifneq ($(CONDA_ENV),)
  PY := $(CONDA_PREFIX)/bin/python
else
  PY := .venv/bin/python
endif
SHARED ?= ../shared
# the data folder: XFER_DATA_DIR if set, else data/raw unpacked from ../shared when it is there
ifeq ($(XFER_DATA_DIR),)
  ifneq ($(wildcard $(SHARED)/data/unpack),)
    export XFER_DATA_DIR := $(CURDIR)/data/raw
    DATA := data/raw/.unpacked
  endif
endif

.PHONY: report plan run status fetch tensorboard test test-long model data bench gpu-check carry lab clean-runs setup
report: setup $(DATA)
	$(PY) -m xfer.runner all "$$XFER_PARAMS"

plan: setup $(DATA)
	$(PY) -m xfer.runner plan "$$XFER_PARAMS"

run: setup $(DATA)
	$(PY) -m xfer.runner run "$$XFER_PARAMS"

status: setup $(DATA)
	$(PY) -m xfer.runner status "$$XFER_PARAMS"

fetch: setup
	$(PY) -m xfer.runner fetch "$$XFER_PARAMS"

tensorboard: setup $(DATA)
	$(PY) -m xfer.runner tensorboard "$$XFER_PARAMS"

TEST_WORKERS ?= 2
test: setup $(DATA)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15 -m "not long" tests

test-long: setup $(DATA)
	$(PY) -m pytest -q -m long tests

model: setup
	$(PY) -m xfer.models.e5

carry: setup $(DATA)
	$(PY) -m xfer.carry pack "$$XFER_PARAMS" .carry

bench: setup $(DATA)
	$(PY) -m xfer.bench --params params/cpu.yaml

gpu-check: setup $(DATA)
	$(PY) -m xfer.bench --gpu-check --params params/demo.yaml --budget 600

lab: setup $(DATA)
	$(dir $(PY))jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

data: $(DATA)
data/raw/.unpacked:
	$(SHARED)/data/unpack data/raw
	touch $@

ifneq ($(CONDA_ENV),)
setup:  # the conda environment is the user's: checked, never changed
	@$(PY) -c "import xfer, papermill" 2>/dev/null || { echo "error: conda environment $(CONDA_ENV) lacks xfer:" \
	  "conda env update -n $(CONDA_ENV) -f environment.yml (or conda deactivate to use .venv)" >&2; exit 2; }
else
setup: .venv/.installed
endif
.venv/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	# outputs never reach a commit: nbstripout as a git filter, by a path relative to the checkout so
	# every worktree's filter is its own venv's (nbstripout --install writes an absolute one)
	-git rev-parse --git-dir >/dev/null 2>&1 && git config filter.nbstripout.clean '.venv/bin/python -m nbstripout' \
	  && git config filter.nbstripout.smudge cat && git config filter.nbstripout.required true \
	  && git config diff.ipynb.textconv '.venv/bin/python -m nbstripout -t'
	touch $@

clean-runs:
	rm -rf runs/interactive
