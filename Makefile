# `make test` and `make demo` set everything up themselves on a fresh Debian
# machine: apt packages when missing, a virtualenv in .venv, the package.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := iproute2 iputils-ping bird2 isc-dhcp-client ndisc6 tcpdump nftables dnsmasq-base frr etcd-server smcroute
STAMP := $(VENV)/.installed

.PHONY: test unit netns demo deps venv lint bench fuzz clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

# pytest exits 5 when it collects nothing: for us that means a broken
# checkout, so say so instead of passing or failing silently.
test: deps venv
	@$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

unit: venv
	$(PY) -m pytest -q tests/unit

netns: deps venv
	$(PY) -m pytest -q tests/netns

demo: deps venv
	$(PY) -m hvrouter.lab.demo

bench: deps venv
	$(VENV)/bin/hvrouter bench program --ports 10000 --json

# Many more generated packets than CI's 100k per protocol.
fuzz: venv
	HVROUTER_FUZZ_EXAMPLES=2000000 HVROUTER_FUZZ_HYPOTHESIS=5000 $(PY) -m pytest -q tests/unit/test_services_fuzz.py

lint: venv
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info
