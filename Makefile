# The two commands a newcomer needs: `make run` and `make test`.
# Both create or update the virtual environment .venv/ and install what the project needs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The dashboard's browser tests drive Debian's chromium (Playwright cannot download its own
# browser here); CHROMIUM names the command looked for.
CHROMIUM ?= chromium

.PHONY: run test lint typecheck unit browser venv bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,nats,redis,otel]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/contexten demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples tools
	$(BIN)/ruff format --check src tests bench examples tools

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) browser
	$(BIN)/pytest

# Install Debian's chromium when it is missing and we are root; otherwise say why the
# browser tests will skip (under CONTEXTEN_REQUIRE_SERVICES=1 they fail instead).
browser:
	@if command -v $(CHROMIUM) >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "make: installing Debian's chromium for the dashboard's browser tests"; \
		if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium >/dev/null; }; then \
			echo "make: apt-get could not install chromium: the browser tests will skip" \
				"(or fail under CONTEXTEN_REQUIRE_SERVICES=1)" >&2; \
		fi; \
	else \
		echo "make: $(CHROMIUM) is not installed and we are not root, so it cannot be" \
			"installed here: the dashboard's browser tests will skip (or fail under" \
			"CONTEXTEN_REQUIRE_SERVICES=1); install it with: sudo apt-get install -y chromium" >&2; \
	fi

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/b1_dispatch.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
