# The two commands a new user needs: `make demo` and `make test`. Both set up first.
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test check bench lint diagrams serve clean vendor

setup:
	@bash environment/setup.sh

demo: setup
	@$(VENV)/bin/loglens demo

serve: setup
	@$(VENV)/bin/loglens serve

# Static checks first (fast, and a type or format error fails the target before the long suite):
# mypy strict over src/ (settings in pyproject.toml), ruff format and ruff lint.
test: setup check
	@$(PY) -m pytest -n 2 --dist loadgroup --cov=loglens --cov-report=term --cov-fail-under=90 $(PYTEST_ARGS)

check: setup
	@$(VENV)/bin/mypy
	@$(VENV)/bin/ruff format --check src tests bench
	@$(VENV)/bin/ruff check src tests bench

lint: setup check

bench: setup
	@$(PY) bench/ingest.py

diagrams: setup
	@$(PY) -m loglens.tools.diagrams

# Re-fetch the dashboard's chart library (uPlot) from npm into the package's static files.
vendor:
	@bash scripts/vendor_assets.sh

clean:
	rm -rf $(VENV) data .pytest_cache .coverage
