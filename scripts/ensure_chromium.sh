#!/usr/bin/env bash
# The browser test drives the app in Debian's Chromium (Playwright never downloads a browser here).
# Installs it when missing and we may (root); otherwise the browser test skips with a message.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian chromium for the browser test..."
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "note: chromium not found and cannot be installed (not root): the browser test will be skipped" >&2
fi
