#!/usr/bin/env bash
# Debian packages the tests use: a real Prometheus, Lua for the Argo CD health
# check, and headless Chromium with its WebDriver for the dashboard's browser
# test. Installs only what is missing, so a warm run does nothing.
set -euo pipefail
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v lua5.4 >/dev/null || need+=(lua5.4)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [[ ${#need[@]} -eq 0 ]]; then exit 0; fi
if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
  echo "error: missing ${need[*]}; install them with your package manager (Debian: apt-get install ${need[*]})" >&2
  exit 2
fi
SUDO=$([[ $(id -u) -eq 0 ]] || echo sudo)
echo "[system] installing ${need[*]} from Debian's packages" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the prometheus service on install; the tests run their own on loopback.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  $SUDO systemctl stop prometheus || true
fi
