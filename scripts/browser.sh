#!/usr/bin/env bash
# Install Debian's Chromium for the dashboard's browser tests (tests/browser, Playwright drives it
# through executable_path; Playwright's own browser download is never used). Idempotent: does
# nothing when /usr/bin/chromium exists. Needs root (CI and the dev machines run as root).
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "$CHROMIUM is missing: install Debian's chromium package as root (apt-get install chromium)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
install() {
  apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null
}
echo "installing chromium (Debian)"
if ! install; then
  echo "refreshing the package lists and retrying"
  apt-get update -q >/dev/null
  install
fi
"$CHROMIUM" --version
