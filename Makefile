# posbridge: `make run` starts the daemon on the embedded sandbox cloud; `make test` runs the suite; `make deb`
# builds the Debian package. Each sets up everything it needs: Debian packages (when root), a virtualenv in .venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEBS   := libzbar0
# the counter screen's browser tests (Playwright drives Debian's chromium)
TEST_DEBS := chromium
# what the Debian package tests need (tests/test_debian_package.py skips, saying why, without them)
PACKAGE_TEST_DEBS := debhelper dh-virtualenv dpkg-dev lintian mmdebstrap python3-venv

.PHONY: run test bench deps venv clean deb

run: $(STAMP)
	$(VENV)/bin/posbridge run --sandbox

test: $(STAMP)
	@bash scripts/debian-deps.sh $(TEST_DEBS) $(PACKAGE_TEST_DEBS)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) bench/enqueue.py
	$(PY) bench/invoices.py
	$(PY) bench/members.py
	$(PY) bench/scanners.py
	$(PY) bench/outputs.py

deps:
	@bash scripts/debian-deps.sh $(DEBS)

$(STAMP): pyproject.toml | deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "posbridge: could not create a virtualenv; on Debian/Ubuntu: apt-get install python3-venv"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# The Debian package (debian/, scripts/build-deb.sh): dist/posbridge_<version>_<arch>.deb
deb: $(STAMP)
	@bash scripts/debian-deps.sh debhelper dh-virtualenv dpkg-dev python3-venv
	@bash scripts/build-deb.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
