#!/usr/bin/env bash
# `make deb`: build dist/posbridge_<version>_<arch>.deb with dpkg-buildpackage, debhelper and dh-virtualenv.
#
# The package is built from a copy of the project's files (git ls-files) in build/deb/, so the working tree
# stays clean and nothing lands in the parent directory (dpkg-buildpackage writes its results there).
# Each Python library is pinned to the version the test virtualenv (.venv) holds: the package contains what
# `make test` tested. Environment:
#   POSBRIDGE_DEB_VERSION  package version (default: pyproject.toml's version)
#   POSBRIDGE_VENV         the tested virtualenv to take the versions from (default: .venv)
#   POSBRIDGE_DEB_OUTPUT   directory the .deb is written to (default: dist)
#   POSBRIDGE_DEB_BUILD    scratch directory (default: build/deb)
#   POSBRIDGE_DEB_COMPRESSION  xz (default, smallest) or gzip; POSBRIDGE_DEB_COMPRESSION_LEVEL its level
#                              (the tests build with gzip level 1: the same files, ten times faster)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

version=${POSBRIDGE_DEB_VERSION:-$(/usr/bin/python3 -c \
  'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')}
missing=()
for tool in dpkg-buildpackage dh dh_virtualenv; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "make deb: missing ${missing[*]}; install them with: sudo apt-get install debhelper dh-virtualenv dpkg-dev python3-venv" >&2
  exit 1
fi
if ! /usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1; then
  echo "make deb: Debian's python3 cannot make a virtualenv; install it with: sudo apt-get install python3-venv" >&2
  exit 1
fi

build=${POSBRIDGE_DEB_BUILD:-$root/build/deb}
output=${POSBRIDGE_DEB_OUTPUT:-$root/dist}
src=$build/posbridge-$version
rm -rf "$build"
mkdir -p "$src" "$output"

# the project's files as git sees them (tracked and new, not ignored); a tree without git: everything but
# the virtualenv and build products
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$root" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do
      if [ -e "$file" ] || [ -L "$file" ]; then
        cp -P --parents -- "$file" "$src/"
      fi
    done
  commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
  epoch=$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)
else
  tar -C "$root" --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./state \
      --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache -cf - . | tar -C "$src" -xf -
  commit=unknown
  epoch=$(date +%s)
fi

venv=${POSBRIDGE_VENV:-$root/.venv}
if [ -x "$venv/bin/python" ]; then
  "$venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check 2>/dev/null |
    grep -v -e '^-e ' -e ' @ ' -e '^posbridge==' > "$src/debian/constraints.txt" || true
  echo "make deb: Python libraries pinned to the versions in $venv ($(wc -l < "$src/debian/constraints.txt") pins)"
  # the same pip as the tested virtualenv: it finds the wheels that one downloaded in pip's cache
  POSBRIDGE_PIP_VERSION=$("$venv/bin/python" -m pip --version 2>/dev/null | awk '{print $2}')
  export POSBRIDGE_PIP_VERSION
else
  echo "make deb: no tested virtualenv at $venv; taking the newest versions pyproject.toml allows"
fi

date=$(date -R -u -d "@$epoch")
cat > "$src/debian/changelog" <<CHANGELOG
posbridge ($version) unstable; urgency=medium

  * Built from commit $commit.

 -- posbridge developers <posbridge@example.org>  $date
CHANGELOG

cd "$src"
export SOURCE_DATE_EPOCH=$epoch DEB_BUILD_OPTIONS="nocheck ${DEB_BUILD_OPTIONS:-}"
export POSBRIDGE_DEB_COMPRESSION=${POSBRIDGE_DEB_COMPRESSION:-xz} POSBRIDGE_DEB_COMPRESSION_LEVEL=${POSBRIDGE_DEB_COMPRESSION_LEVEL:-}
# each line of the log starts with the seconds since the build started, to see where the time goes
started=$SECONDS
dpkg-buildpackage -b -us -uc --no-pre-clean 2>&1 |
  while IFS= read -r line; do printf '%4d %s\n' $((SECONDS - started)) "$line"; done > "$build/build.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || {
  tail -n 40 "$build/build.log" >&2
  echo "make deb: dpkg-buildpackage failed; the whole log is $build/build.log" >&2
  exit 1
}
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=posbridge_${version}_${arch}.deb
mv "$build/$deb" "$output/$deb"
echo "make deb: built $output/$deb ($(du -h "$output/$deb" | cut -f1))"
