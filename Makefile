# Two commands for a newcomer: `make run` starts the service, `make test` passes the tests.
PYTHON_VERSION ?= 3.12
# pyenv's interpreter when there is one (its shims fail for a version that is not selected), else python3.12.
PYTHON ?= $(shell ls -d $$(pyenv root 2>/dev/null)/versions/$(PYTHON_VERSION).*/bin/python 2>/dev/null | tail -n 1 || true)
ifeq ($(PYTHON),)
PYTHON := $(shell command -v python$(PYTHON_VERSION) 2>/dev/null)
endif
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run run-aws test lint typecheck cfn-lint pytest validate bench clean

$(BIN)/.installed: requirements-dev.txt layers/common/requirements.txt functions/*/requirements.txt pyproject.toml client/pyproject.toml
	@test -n "$(PYTHON)" || (echo "Python $(PYTHON_VERSION) not found: install it (pyenv install $(PYTHON_VERSION)) or set PYTHON=" && exit 1)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(BIN)/.installed ## the whole service on 127.0.0.1 over SQLite in data/ (no AWS account needed)
	$(BIN)/python -m local.embedded

run-aws: $(BIN)/.installed ## the real Lambda handlers around moto (or AWS_ENDPOINT_URL's emulator, e.g. LocalStack)
	$(BIN)/python -m local

test: $(BIN)/.installed lint typecheck cfn-lint pytest ## everything CI runs

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

cfn-lint: $(BIN)/.installed
	$(BIN)/cfn-lint template.yaml

# Every tier once, `slow` tests included (benchmarks' quick runs, the client's 2,500-message add: ~2.5 min of
# ~7.5 on two cores; `-m "not slow"` skips them locally); the AWS-facing tiers run against
# moto: in-process (mock_aws) for handlers, its server under the local stack in e2e.
pytest: $(BIN)/.installed
	$(BIN)/pytest -q

validate: ## sam validate --lint and sam build, with SAM CLI in its own virtual environment
	test -x .venv-sam/bin/sam || ($(PYTHON) -m venv .venv-sam && .venv-sam/bin/pip install --quiet aws-sam-cli)
	.venv-sam/bin/sam validate --lint
	PATH=$$(dirname $(PYTHON)):$$PATH .venv-sam/bin/sam build

bench: $(BIN)/.installed ## all benchmarks
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-sam .aws-sam .pytest_cache .mypy_cache .ruff_cache
