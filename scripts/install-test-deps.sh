#!/usr/bin/env bash
# Installs what the integration tests run for real, when missing: Prometheus (Debian package
# `prometheus`) scrapes the gateway in a test, and headless Chromium (`chromium`) runs the web
# page with a fake microphone. Needs root or sudo for apt-get.
set -euo pipefail

missing=()
[[ -x /usr/bin/prometheus ]] || missing+=(prometheus)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)

if ((${#missing[@]} == 0)); then
    exit 0
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-test-deps: the tests need ${missing[*]} (Debian packages); run as root or install them" >&2
        exit 1
    fi
    sudo=(sudo)
fi
echo "install-test-deps: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
# The packages' services are not started: the tests start their own instances on 127.0.0.1.
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
