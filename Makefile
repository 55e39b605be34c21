# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench browser postgres

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the machine has a local CPU build; any other spec pulls GBs of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian's Chromium drives the labelling-page tests (Playwright with executable_path); Playwright's
# own browser download cannot work here. Idempotent: skipped when /usr/bin/chromium exists.
browser:
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)

# Debian's PostgreSQL server binaries: the store tests start their own throwaway server with them
# (tests/_postgres.py: a temporary cluster on a free loopback port, run as an unprivileged user).
# Idempotent: skipped when a server is installed. The package's own cluster is not needed.
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

install: $(STAMP) browser postgres

demo: $(STAMP)
	$(BIN)/rlhf control demo --out runs/demo

test: $(STAMP) browser postgres
	RLHF_REQUIRE_POSTGRES=1 $(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/control.py

clean:
	rm -rf $(VENV) runs
