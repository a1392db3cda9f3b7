#!/usr/bin/env bash
# Installs the Debian packages posbridge needs (given as arguments) when they are missing.
# As root it installs them with apt-get; otherwise it says what to run and carries on: the daemon works
# without them (only the optional zbar decoder needs libzbar0), and the tests that need chromium (the counter
# screen) or the packaging tools (debhelper, dh-virtualenv, lintian, mmdebstrap) skip themselves, saying why.
set -u
missing=()
for pkg in "$@"; do
  # Ubuntu 24.04 renamed libzbar0 to libzbar0t64; either satisfies us.
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" ||
     dpkg-query -W -f='${Status}' "${pkg}t64" 2>/dev/null | grep -q "ok installed"; then
    continue
  fi
  missing+=("$pkg")
done
# a bare Debian/Ubuntu Python cannot make a virtualenv without python3-venv (ensurepip)
if ! "${PYTHON:-python3}" -c "import ensurepip" >/dev/null 2>&1; then
  missing+=("python3-venv")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "posbridge: not a Debian-like system; install these yourself if you need them: ${missing[*]}"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "posbridge: missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
  exit 0
fi
echo "posbridge: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
# all at once (one dpkg run), else one by one so that one missing name does not block the others
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  for pkg in "${missing[@]}"; do
    apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 ||
      apt-get install -y -qq --no-install-recommends "${pkg}t64" >/dev/null 2>&1 ||
      echo "posbridge: could not install $pkg (apt-get install $pkg); what needs it is skipped or unavailable"
  done
fi
exit 0
