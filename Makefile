# Two commands matter: `make demo` (the main job on the embedded default) and
# `make test` (every check CI runs). Both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SLITHER_VENV := .venv-slither
NODE_BIN := contracts/node_modules/.bin
PY_PACKAGES := cvm backend node_agent devstack guest tests bench

.PHONY: all install system-packages demo demo-vm demo-service demo-failover image test lint typecheck contracts contracts-selfcheck contracts-test \
	slither pytest \
	compose-check bench clean

all: install

# --- installation -----------------------------------------------------------------
$(VENV)/.installed: pyproject.toml
	@echo "==> Python environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

contracts/node_modules/.installed: contracts/package.json contracts/package-lock.json
	@echo "==> npm packages for contracts/ (solc, OpenZeppelin, anvil, forge) from the lock file"
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(SLITHER_VENV)/.installed: contracts/slither-requirements.txt
	@echo "==> slither in its own environment ($(SLITHER_VENV))"
	$(PYTHON) -m venv $(SLITHER_VENV)
	$(SLITHER_VENV)/bin/pip install --quiet --upgrade pip
	$(SLITHER_VENV)/bin/pip install --quiet -r contracts/slither-requirements.txt
	@touch $@

# Debian packages the tests drive for real: QEMU (the qemu launcher boots a guest) and
# docker-compose (validates docker-compose.yml without an engine). Installed only when missing.
SYSTEM_COMMANDS := qemu-system-x86_64:qemu-system-x86 docker-compose:docker-compose
# The guest image is assembled from Debian packages (apt-get download, dpkg-deb); renters
# reach their guest with OpenSSH's client.
SYSTEM_COMMANDS += ssh:openssh-client ssh-keygen:openssh-client dpkg-deb:dpkg
# The README's "Run your own service" makes its API token with openssl (tested as written).
SYSTEM_COMMANDS += openssl:openssl
# Format v2 images: a reproducible squashfs rootfs with its dm-verity hash tree.
SYSTEM_COMMANDS += mksquashfs:squashfs-tools veritysetup:cryptsetup-bin
# A workload's OCI image (`docker save` output, an OCI layout) becomes its root file system
# through Debian's skopeo (reads the archive) and umoci (applies the layers and whiteouts).
SYSTEM_COMMANDS += skopeo:skopeo umoci:umoci
# Debian's Chromium, driven by Playwright in the browser tests (its own browser download is impossible here).
SYSTEM_COMMANDS += chromium:chromium
system-packages:
	@missing=""; for pair in $(SYSTEM_COMMANDS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "==> apt-get install$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

install: $(VENV)/.installed contracts/node_modules/.installed

# --- web console: npm from its lock file, built into web/dist (served by the backend at /) ---
.PHONY: web
WEB_SOURCES := web/build.mjs $(shell find web/src web/public -type f 2>/dev/null) $(wildcard contracts/out/*.json)
web/node_modules/.installed: web/package.json web/package-lock.json
	@echo "==> npm packages for web/ (viem, mipd, esbuild) from the lock file"
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

web/dist/.built: web/node_modules/.installed $(WEB_SOURCES)
	@echo "==> web console into web/dist"
	cd web && node build.mjs
	@touch $@

web: web/dist/.built
install: web/dist/.built

# --- the two commands -------------------------------------------------------------
demo: install
	$(BIN)/cvm demo

# The guest image (Debian cloud kernel, busybox, python3, dropbear, the guest agent), cached
# by its inputs under CVM_IMAGE_DIR; then a real VM rented, attested, entered over SSH.
image: install system-packages
	$(BIN)/cvm image build

demo-vm: install system-packages
	$(BIN)/cvm demo --launcher qemu --nodes 1 --timeout 240

# Your own service (README, "Run your own service"): the stateful example built from its
# workload file, rented with an encrypted disk, reached over attested TLS, its guest killed
# and relaunched with the data kept, closed. Exits 1 naming the step that failed.
demo-service: install system-packages
	$(BIN)/cvm demo --workload examples/kv-store/workload.toml --nodes 1 --timeout 300

# A lease that survives its node (README, "Leases that survive their node"): 3 key holders,
# 2 qemu nodes; the stateful example rented with --key-service --failover, a value written,
# the first node killed, the value read back from the second. Prints each phase's time.
demo-failover: install system-packages
	$(BIN)/cvm demo --failover

# The steps before pytest need the installs but not each other, so they run two at a time
# (CI has 2 cores): an install waiting on the network, or a single-threaded check (mypy,
# slither), beside another step; the longest chain (npm, the forge self-check, forge's tests) starts first. Each
# step's output is printed in one piece when it ends; the first failing step fails `make test`.
# pytest runs alone afterwards, on both cores (see the pytest target).
CHECKS := system-packages contracts-test typecheck lint slither compose-check install
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target $(CHECKS)
	$(MAKE) --no-print-directory pytest
	@echo "==> all checks passed"

# --- checks -----------------------------------------------------------------------
lint: $(VENV)/.installed
	@echo "==> ruff"
	$(BIN)/ruff check $(PY_PACKAGES)
	$(BIN)/ruff format --check $(PY_PACKAGES)
	@echo "==> import-linter (the dependency direction of DESIGN.md)"
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed
	@echo "==> mypy"
	$(BIN)/mypy

contracts: contracts/node_modules/.installed $(VENV)/.installed
	@echo "==> compile contracts to contracts/out and cvm/chain/artifacts"
	$(PY) -m cvm.chain.build

# A deliberately failing forge test, in a temporary copy of contracts/ (never in the suite),
# must make `./scripts/forge test` exit non-zero: otherwise contracts-test could not fail.
contracts-selfcheck: contracts/node_modules/.installed
	@echo "==> forge self-check (a failing forge test must fail the contracts step)"
	./contracts/scripts/forge-selfcheck

contracts-test: contracts/node_modules/.installed contracts-selfcheck
	@echo "==> forge tests (unit, fuzz, invariant)"
	cd contracts && ./scripts/forge test

slither: $(SLITHER_VENV)/.installed contracts/node_modules/.installed
	@echo "==> slither over contracts/src"
	./contracts/scripts/slither-check

compose-check: system-packages
	@echo "==> docker-compose.yml (validated by docker-compose config, no engine needed)"
	CVM_VERIFIER_ADDRESS=0x0000000000000000000000000000000000000001 docker-compose -f docker-compose.yml config -q

# Two processes (tests/conftest.py groups them): the modules that boot guests run one at a
# time in one, every other module whole in either. PYTEST_WORKERS=0 runs them all in one.
PYTEST_WORKERS ?= 2
pytest: install system-packages
	@echo "==> pytest ($(PYTEST_WORKERS) workers)"
	$(BIN)/pytest -q --durations=30 -n $(PYTEST_WORKERS) --dist loadgroup

bench: install
	$(PY) -m bench.gas --json

clean:
	rm -rf $(VENV) $(SLITHER_VENV) contracts/node_modules contracts/cache
	rm -rf web/node_modules web/dist
