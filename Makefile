# Two commands matter: `make run` (build + demo) and `make test` (build + tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
INPUTS := $(wildcard csrc/*.c csrc/*.h man/*.1 man/*.7) build_ffi.py setup.py pyproject.toml
DEMO   := build/demo.tet

.PHONY: all build run test test-scalar lint typecheck cwarn bench interop man clean

all: build

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel cffi

$(STAMP): $(PY) $(INPUTS)
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	@# an editable install skips data files; a wheel carries them (pyproject data-files)
	install -d $(VENV)/share/man/man1 $(VENV)/share/man/man7
	install -m 644 man/*.1 $(VENV)/share/man/man1
	install -m 644 man/*.7 $(VENV)/share/man/man7
	touch $(STAMP)

build: $(STAMP)

run: build
	$(PY) -m tet.demo $(DEMO)
	$(VENV)/bin/tet info $(DEMO)
	$(VENV)/bin/tet verify $(DEMO) -q
	$(VENV)/bin/tet query '{"dataset": "temperature", "mean": "hour"}' -t $(DEMO) -x -q
	$(VENV)/bin/tet query '{"dataset": "temperature", "quantile": {"q": 0.9, "axis": []}}' \
	    -t $(DEMO) -x --format table

test: build cwarn
	$(PY) -m pytest
	TET_SIMD=scalar $(PY) -m pytest -p no:randomly tests/test_simd.py tests/test_roundtrip.py
	$(MAKE) --no-print-directory lint typecheck

lint: build
	$(VENV)/bin/ruff check tet tests bench tools

typecheck: build
	$(VENV)/bin/mypy

# The kernels alone, at the strictest warning level, as plain C99.
cwarn:
	@mkdir -p build/cwarn
	@for f in csrc/*.c; do \
	  cc -std=c99 -Wall -Wextra -Werror -pedantic -DTET_NO_ZSTD_H -Icsrc -c $$f \
	     -o build/cwarn/$$(basename $$f .c).o || exit 1; done
	@echo "cwarn: csrc/*.c compile cleanly with -std=c99 -Wall -Wextra -Werror -pedantic"

bench: build
	$(PY) bench/bench_io.py
	$(PY) bench/bench_fold.py
	$(PY) bench/bench_tier_c.py
	$(PY) bench/bench_convert.py
	$(PY) bench/bench_xarray.py

interop: build
	$(PY) tools/interop.py

# Regenerate man/ from the parser and the operation registry (a test fails when stale).
man: build
	$(PY) -m tet.cli.manpages man

clean:
	rm -rf build $(VENV) .venv-ref tet/_native*.so *.egg-info .pytest_cache .mypy_cache
