#!/usr/bin/env bash
# Install the peer servers the benchmarks compare jobmonitor with:
# Debian's gearman-job-server (gearmand) and beanstalkd.
#
# Idempotent: a package already installed is left alone.  Always exits 0:
# the benchmark runner skips a peer whose binary is missing, so a machine
# without apt (or without one of the packages) can still run the rest.
# The daemons are never started as services here: the runner starts its own
# copies on a free loopback port and stops them when it is done.
set -u

packages=(gearman-job-server beanstalkd)
binaries=(gearmand beanstalkd)

have_binary() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]
}

missing=()
for i in "${!packages[@]}"; do
    if have_binary "${binaries[$i]}"; then
        echo "install_peers: ${packages[$i]} already installed (${binaries[$i]})"
    else
        missing+=("${packages[$i]}")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_peers: apt-get not found; could not install: ${missing[*]}" >&2
    echo "install_peers: the benchmarks will skip those peers" >&2
    exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo -n)
    else
        echo "install_peers: not root and no sudo; could not install: ${missing[*]}" >&2
        exit 0
    fi
fi

echo "install_peers: apt-get update"
"${sudo_cmd[@]}" apt-get update -qq || echo "install_peers: apt-get update failed" >&2

installable=()
for package in "${missing[@]}"; do
    candidate=$(apt-cache policy "$package" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
        echo "install_peers: no Debian package $package in the apt sources" >&2
    else
        echo "install_peers: will install $package $candidate"
        installable+=("$package")
    fi
done

if [ "${#installable[@]}" -gt 0 ]; then
    # RUNLEVEL=1 keeps invoke-rc.d from starting the daemons as services.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
        "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${installable[@]}" \
        || echo "install_peers: apt-get install reported an error" >&2
fi

failed=()
for i in "${!packages[@]}"; do
    if ! have_binary "${binaries[$i]}"; then
        failed+=("${packages[$i]}")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "install_peers: could not install: ${failed[*]} (the benchmarks will skip them)" >&2
else
    echo "install_peers: all peers installed"
fi
exit 0
