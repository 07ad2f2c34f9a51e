# The two commands: `make demo` runs the main job, `make test` passes the tests.
# Both create .venv when missing and install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-quick lint bench clean

$(VENV)/bin/python:
	@# A torch already installed for $(PYTHON) is kept: the venv then sees the system site-packages.
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "using the torch already installed for $(PYTHON)"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi

$(STAMP): $(VENV)/bin/python pyproject.toml
	@# torch==2.13.0 is the CPU wheel on this kind of machine; a bare `torch` would pull CUDA packages.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --disable-pip-version-check -q "torch==2.13.0"
	$(PY) -m pip install --disable-pip-version-check -q -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mole quickstart --out runs/quickstart

test: $(STAMP)
	$(PY) -m pytest -q

test-quick: $(STAMP)  # the loop while editing: everything but the end-to-end tests marked slow
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check mole tests scripts

bench: $(STAMP)
	$(PY) scripts/bench_all.py --out runs/bench

clean:
	rm -rf $(VENV) runs .pytest_cache
