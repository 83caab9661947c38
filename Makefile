# Two commands matter: `make run` (build + demo) and `make test` (build + tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
INPUTS := $(wildcard csrc/*.c csrc/*.h man/*.1 man/*.7) build_ffi.py setup.py pyproject.toml
DEMO   := build/demo.tet
# Builds made here fail on a C warning (build_ffi.py adds -Werror); users' installs do not.
export TET_WERROR := 1

FUZZ_CASES   ?= 30000
FUZZ_SEED    ?= 1
FUZZ_TIME    ?= 0
FUZZ_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
ASAN_DIR     := build/asan
ASAN_FUZZ_CASES ?= 3000
# The kernels built with ASan+UBSan (tools/build_asan.py) are loaded through TET_NATIVE;
# the interpreter is not instrumented, so the ASan runtime is preloaded.
ASAN_ENV = LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 \
	UBSAN_OPTIONS=print_stacktrace=1:abort_on_error=1 TET_NATIVE=$(ASAN_DIR)/_native.so

.PHONY: all build run test test-scalar lint typecheck cwarn bench interop ref man clean fuzz asan wheel

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

test: build cwarn ref
	$(PY) -m pytest
	TET_SIMD=scalar $(PY) -m pytest -p no:randomly tests/test_simd.py tests/test_roundtrip.py
	$(MAKE) --no-print-directory lint typecheck

lint: build
	$(VENV)/bin/ruff check tet tet_console.py tests bench tools build_ffi.py setup.py

typecheck: build
	$(VENV)/bin/mypy

# The kernels alone, at the strictest warning level, as plain C99.
cwarn:
	@mkdir -p build/cwarn
	@for f in csrc/*.c; do \
	  cc -std=c99 -Wall -Wextra -Werror -pedantic -DTET_NO_ZSTD_H -Icsrc -c $$f \
	     -o build/cwarn/$$(basename $$f .c).o || exit 1; done
	@echo "cwarn: csrc/*.c compile cleanly with -std=c99 -Wall -Wextra -Werror -pedantic"

# Mutation fuzzing (tests run a short deterministic slice of it): every case must end in a
# TetError; crashes, hangs, other exceptions and memory breaches fail the run.
fuzz: build
	$(PY) tools/fuzz.py --cases $(FUZZ_CASES) --seed $(FUZZ_SEED) --time $(FUZZ_TIME) \
	    --workers $(FUZZ_WORKERS)

# The suite and a fuzz run against kernels built with -fsanitize=address,undefined
# (build/asan; the normal tet/_native*.so is left alone).  RLIMIT_AS cannot coexist with
# ASan's shadow memory, so the fuzz run bounds memory by RSS only.
asan: build
	$(PY) tools/build_asan.py $(ASAN_DIR)
	$(ASAN_ENV) $(PY) -m pytest
	$(ASAN_ENV) $(PY) tools/fuzz.py --cases $(ASAN_FUZZ_CASES) --seed $(FUZZ_SEED) \
	    --as-limit 0 --rss-limit 4294967296 --workers $(FUZZ_WORKERS)

# A manylinux wheel in dist/: the abi3 wheel, then auditwheel bundles libzstd into it.
wheel: build
	rm -rf build/wheel-raw
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w build/wheel-raw .
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/auditwheel repair -w dist build/wheel-raw/*.whl

bench: build
	$(PY) -m pip install -q --no-build-isolation -e '.[bench]'
	$(PY) bench/bench_io.py
	$(PY) bench/bench_tilecache.py
	$(PY) bench/bench_fold.py
	$(PY) bench/bench_tier_c.py
	$(PY) bench/bench_select.py
	$(PY) bench/bench_hist_axis0.py
	$(PY) bench/bench_convert.py
	$(PY) bench/bench_xarray.py
	$(PY) bench/bench_remote.py

interop: build
	$(PY) tools/interop.py

# The reference binding tet-py 0.8.3 in .venv-ref: the package tests drive it both ways.
ref: build
	$(PY) -c 'import sys; sys.path.insert(0, "tools"); import interop; interop.ensure_reference()'

# Regenerate man/ from the parser and the operation registry (a test fails when stale).
man: build
	$(PY) -m tet.cli.manpages man

clean:
	rm -rf build dist $(VENV) .venv-ref tet/_native*.so *.egg-info .pytest_cache .mypy_cache
