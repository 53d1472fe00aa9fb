# Developer and CI entry points. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
PYTEST_FLAGS ?= -q -ra

.PHONY: all bootstrap test lint demo bench clean

all: test

# Idempotent and fast when the machine is ready (packages, project, RabbitMQ, PostgreSQL).
bootstrap:
	bash scripts/bootstrap.sh

test: bootstrap lint
	$(PYTHON) -m pytest $(PYTEST_FLAGS)

lint: bootstrap
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy scripts

demo: bootstrap
	$(PYTHON) scripts/demo.py

bench: bootstrap
	$(PYTHON) -m pip install -q -e '.[bench]'
	mkdir -p bench/results
	for b in throughput peers s3_io concurrency memory drain; do $(PYTHON) bench/$$b.py > bench/results/$$b.json || exit 1; done
	$(PYTHON) bench/cold_start.py
	$(PYTHON) bench/plot.py

# Generated files only; a devstack directory (.stack/) may belong to a running stack and stays.
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist ./*.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
