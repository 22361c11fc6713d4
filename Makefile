# Two entry points for a fresh machine (run as root):
#   make demo   install into .venv and run the safe tour in a throwaway namespace
#   make test   install into .venv and run every test (unit, then privileged vm-tests)
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: demo test unit vm-tests kernel-test bench bench-scale bench-smoke bytecode clean system-deps man

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	# compat: a plain path entry instead of an import hook, ~15 ms less start-up per command
	$(VPY) -m pip install --quiet --disable-pip-version-check \
		--config-settings editable_mode=compat -e '.[test]'
	# byte-compile now: with PYTHONDONTWRITEBYTECODE set, every command would recompile
	$(VPY) -m compileall -q mirrormount
	touch $(STAMP)

# Byte-compile what changed since (a no-op when nothing did): with PYTHONDONTWRITEBYTECODE set,
# as in this workplace's shell and some CI, a module edited after install would otherwise be
# compiled again by every command, and the CLI's start-up is what the benchmarks measure.
bytecode: $(STAMP)
	@$(VPY) -m compileall -q mirrormount

demo: $(STAMP) bytecode
	$(VENV)/bin/mirrormount demo

unit: $(STAMP) bytecode
	$(VPY) -m pytest -q tests

# Each vm-test runs twice: sandbox / private, and rshared (as on systemd hosts).
vm-tests: $(STAMP) bytecode system-deps
	$(VPY) -m pytest -q vm-tests

test: $(STAMP) bytecode system-deps
	$(VPY) -m pytest -q tests vm-tests

# The vm-tests marked `kernels` on Debian's 6.1 and 6.12 kernels, each booted under QEMU (TCG)
# with this machine's / as a read-only root; kernels cached in ~/.cache/mirrormount-kernels.
# KERNELS=6.1 runs one; KERNEL_TEST_ARGS="vm-tests" runs them all (README: Other kernels).
kernel-test: $(STAMP) bytecode system-deps
	$(VPY) kernel-test/run.py

# The Debian packages in .ci/debian-packages that are missing (none: nothing is run).
system-deps:
	@missing=$$(sed 's/#.*//' .ci/debian-packages | xargs -r dpkg-query -W -f '$${db:Status-Abbrev} $${Package}\n' 2>&1 | awk '$$1 != "ii" {print $$NF}'); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# man/mirrormount.8 from man/mirrormount.8.in and the CLI's own help (tests/test_manpage.py
# fails while the committed page is stale).
man: $(STAMP)
	$(VPY) -m mirrormount.cli.manpage
	MANWIDTH=80 man --warnings -l man/mirrormount.8 >/dev/null

bench: $(STAMP) bytecode
	$(VPY) bench/bench_create.py
	$(VPY) bench/bench_busy.py

# Every bench/bench_*.py in its quick mode, writing no results file: a smoke check that each
# still runs (.ci/run does it after the tests); not a measurement. A few minutes in all.
bench-smoke: $(STAMP) bytecode
	@set -e; for b in bench/bench_*.py; do \
		echo "bench-smoke: $$b --quick --no-write"; \
		$(VPY) $$b --quick --no-write >/dev/null; \
	done

# 1,000 guests on a 50-mount host, in a sandbox (about 4 minutes; bench/bench_scale.py --quick
# is the 30-second version). Writes bench/results/scale.md.
bench-scale: $(STAMP) bytecode
	$(VPY) bench/bench_scale.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
