# The two commands a new user needs: `make demo` and `make test`. Both set up first.
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test bench lint diagrams serve clean vendor

setup:
	@bash environment/setup.sh

demo: setup
	@$(VENV)/bin/loglens demo

serve: setup
	@$(VENV)/bin/loglens serve

test: setup
	@$(PY) -m pytest -n 2 --dist loadgroup --cov=loglens --cov-report=term --cov-fail-under=90 $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check src tests bench

bench: setup
	@$(PY) bench/ingest.py

diagrams: setup
	@$(PY) -m loglens.diagrams

# Re-fetch the dashboard's chart library (uPlot) from npm into the package's static files.
vendor:
	@bash scripts/vendor_assets.sh

clean:
	rm -rf $(VENV) data .pytest_cache .coverage
