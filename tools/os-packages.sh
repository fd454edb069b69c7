#!/bin/sh
# Installs the Debian/Ubuntu packages named as arguments that are missing, for
# `make deps` (which `make demo` and `make test` run first). Silent when nothing
# is missing. As root it runs apt-get; as anyone else it prints the one command
# to run and fails, since nothing useful can happen without those packages.
set -eu

missing=""
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "make deps: this is not a Debian/Ubuntu system (no apt-get); install the equivalents of:$missing" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "make deps: missing OS packages:$missing" >&2
    echo "make deps: run this once, then the same make command again:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi

echo "make deps: installing OS packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
unavailable=""
for pkg in $missing; do
    candidate=$(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: //p')
    case "$candidate" in ""|"(none)") unavailable="$unavailable $pkg" ;; esac
done
if [ -n "$unavailable" ]; then
    echo "make deps: not available from this machine's apt sources:$unavailable" >&2
    if grep -qs '^ID=ubuntu' /etc/os-release; then
        echo "make deps: on Ubuntu some of these (ripgrep) are in 'universe': add-apt-repository universe, then retry" >&2
    fi
    exit 1
fi
# -qq still lets dpkg name each package it unpacks: that is the progress shown.
apt-get install -y -qq --no-install-recommends $missing
