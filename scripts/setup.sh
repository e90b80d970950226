#!/usr/bin/env bash
# Install what navarch's build and tests need on a fresh Debian machine. Idempotent:
# each step checks first and does nothing when the thing is already there.
set -euo pipefail

need_apt=()
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubectl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
# Container runtime (crates/runtime) and its tests: runc drives containers, the
# test image is built from busybox-static, registry tests push with skopeo to a
# local docker-registry.
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' ||
    need_apt+=(busybox-static)
# Pod network, service proxy and their tests (crates/network): ip, nft, nsenter.
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v nsenter >/dev/null 2>&1 || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]} with apt-get"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" || {
        echo "setup: apt-get install ${need_apt[*]} failed" >&2; exit 1; }
fi

# The official Python client, used by the test suite.
if ! python3 -c 'import kubernetes' >/dev/null 2>&1; then
    echo "setup: installing the Python kubernetes client with pip"
    python3 -m pip install --quiet --disable-pip-version-check 'kubernetes>=31' ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'kubernetes>=31'
fi
echo "setup: ok"
