# pnode: setup / demo / test / bench.  `make demo` and `make test` set up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.pnode-setup
APT_PACKAGES := libopenblas-dev libmpich-dev mpich
PETSC_VERSION := 3.26.1
PETSC_CONFIGURE_OPTIONS ?= --with-fc=0 --with-cuda=0 --with-x=0 --with-debugging=0 COPTFLAGS=-O2 CXXOPTFLAGS=-O2
MPIEXEC ?= mpiexec
NP ?= 2

.PHONY: setup demo test bench clean-venv

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "pnode needs:$$missing. Run: sudo apt-get install -y$$missing"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0 numpy scipy cython
	@if [ -n "$$PETSC_DIR" ]; then echo "Using the PETSc at PETSC_DIR=$$PETSC_DIR PETSC_ARCH=$$PETSC_ARCH"; \
	else PETSC_CONFIGURE_OPTIONS="$(PETSC_CONFIGURE_OPTIONS)" $(PIP) install -q petsc==$(PETSC_VERSION); fi
	$(PIP) install -q --no-build-isolation petsc4py==$(PETSC_VERSION)
	$(PIP) install -q --no-binary mpi4py mpi4py
	$(PIP) install -q -e '.[test]'
	$(PY) -c "import pnode; pnode.check_build()"
	touch $(STAMP)

demo: setup
	$(PY) examples/spiral.py --out out/spiral

test: setup
	$(PY) -m pytest -q tests --ignore=tests/mpi
	$(MPIEXEC) -n $(NP) $(PY) -m pytest -q -p no:cacheprovider tests/mpi

bench: setup
	$(PIP) install -q -e '.[bench]'
	$(PY) benchmarks/run_all.py --mpiexec $(MPIEXEC)

clean-venv:
	rm -rf $(VENV)
