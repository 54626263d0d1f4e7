# The README's commands. Each target installs what it needs first, so a fresh clone works.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench install install-rsyslog clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/carnet serve --data-dir var

# rsyslog + rsyslog-gnutls (Debian) for the ATNA interop tests in tests/atna_transport: installed where apt
# is usable as root; elsewhere those tests skip, except with CI=true where they fail.
install-rsyslog:
	@if ! command -v rsyslogd >/dev/null 2>&1 && [ ! -x /usr/sbin/rsyslogd ] \
	    || ! ls /usr/lib/*/rsyslog/lmnsd_gtls.so /usr/lib/rsyslog/lmnsd_gtls.so 2>/dev/null | grep -q .; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q rsyslog rsyslog-gnutls >/dev/null 2>&1 \
	      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q rsyslog rsyslog-gnutls >/dev/null; } \
	      || echo "rsyslog could not be installed: the rsyslog interop tests will skip (fail with CI=true)"; \
	  else \
	    echo "rsyslog is not installed (needs root and apt-get): the rsyslog interop tests will skip"; \
	  fi; \
	fi

test: $(STAMP) install-rsyslog
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
