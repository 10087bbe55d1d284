# make test: lint, type-check and run the whole suite (real Redis, ZooKeeper
# and Prometheus included); make demo: watch the agent against two Redis
# servers.

VENV := .venv
PYTHON := $(VENV)/bin/python
# What Debian's zookeeper package (through libzookeeper-java) installs.
ZOOKEEPER_JAR := /usr/share/java/zookeeper.jar

.PHONY: venv system-deps demo-deps test demo clean

venv: $(VENV)/.installed

# A compat editable install: the working tree is on sys.path, so sources
# edited later need no reinstall and twistd finds twisted/plugins/ here (a
# plain editable install hides the dropin). Then build the plugin cache.
$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
		--editable '.[test]' --config-settings editable_mode=compat
	$(PYTHON) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

# What the demo needs (Redis and ZooKeeper), and what the tests need besides
# (Chromium for the status page, Prometheus against a real agent). The demo
# installs only its own: a first `make demo` pulled in a browser and
# Prometheus it never runs.
DEMO_DEPS := redis-server zookeeper
TEST_DEPS := $(DEMO_DEPS) chromium prometheus

# $(call install_missing,DEPS): install those of DEPS (names above, each a
# Debian package) that are missing, through sudo unless root.
define install_missing
	@missing=""; \
	for dep in $(1); do \
		case $$dep in \
		zookeeper) { [ -f $(ZOOKEEPER_JAR) ] && command -v java >/dev/null; } ;; \
		prometheus) command -v prometheus >/dev/null && command -v promtool >/dev/null ;; \
		*) command -v $$dep >/dev/null ;; \
		esac || missing="$$missing $$dep"; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null; then sudo="sudo"; \
	else echo "missing:$$missing; as root: apt-get install$$missing" >&2; exit 1; fi; \
	echo "installing Debian packages for:$$missing"; \
	$$sudo apt-get update && \
	$$sudo env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends $$missing
endef

system-deps:
	$(call install_missing,$(TEST_DEPS))

demo-deps:
	$(call install_missing,$(DEMO_DEPS))

# Trial workers: most of the suite's time is waiting on real servers and
# clocks (session timeouts, intervals), not computing: with one worker per
# core, two cores were busy for less than a third of the run. So two per
# core (up to 4): on two cores, 4 workers ran the suite in 229 s where 2
# took 303-339 s. JOBS=1 runs the tests in one process, in order.
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); n=$$((2 * n)); [ $$n -gt 4 ] && n=4; echo $$n)

# Every check runs even if an earlier one fails; the target fails if any did.
# mypy is strict through mypy.ini (a --strict flag would override its
# exceptions for Twisted's unannotated calls).
test: system-deps venv
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check sentinel tests benchmarks tools || status=1; \
	$(VENV)/bin/mypy sentinel || status=1; \
	PYTHONPATH=. $(PYTHON) -m twisted.trial --jobs=$(JOBS) tests || status=1; \
	exit $$status

demo: demo-deps venv
	PYTHONPATH=. $(PYTHON) tools/demo.py

clean:
	rm -rf $(VENV) build dist *.egg-info _trial_temp* .mypy_cache .ruff_cache \
		twisted/plugins/dropin.cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
