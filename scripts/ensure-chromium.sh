#!/usr/bin/env bash
# Installs headless Chromium (Debian package `chromium`) for the report test
# (tests/report.rs), once; later runs find it and do nothing. Never fails the build: where
# it cannot be installed (no root, no apt, no network), the test skips and says why.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: no apt-get here; the report screenshot test will skip" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure-chromium: not root and no sudo; the report screenshot test will skip" >&2
    exit 0
  fi
fi
echo "ensure-chromium: installing chromium with apt-get (once)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; then
  $SUDO apt-get update -q >/dev/null 2>&1 || true
  $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 ||
    echo "ensure-chromium: apt-get install chromium failed; the report screenshot test will skip" >&2
fi
exit 0
