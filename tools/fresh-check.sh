#!/usr/bin/env bash
# make fresh-check: run `make demo` as a new user would, on a Debian 12 that has
# only python3 and make, so that nothing installed on this machine can help.
#
# 1. a minimal Debian 12 root (debootstrap --variant=minbase, from the Debian
#    mirror this machine's apt uses), built once and cached in .fresh-root/base
#    (git-ignored; or $FRESH_CACHE/base; delete it to force a rebuild);
# 2. each run gets a throw-away copy of it (an overlay: the cache stays pristine,
#    so `make deps` must really install grep, ripgrep and python3-venv there);
# 3. a clean clone of the current commit (uncommitted files cannot help);
# 4. `make demo` as root inside its own mount and pid namespaces, entered with
#    pivot_root (the workers' own pivot_root needs a root that is a mount point),
#    with a fresh /proc, a minimal /dev, sysfs, a cgroup subtree of its own (the
#    workers create per-call cgroups; see delegate_cgroups), and the host's
#    resolv.conf for apt and pip;
#    when the host tells pip which CA bundle to trust (PIP_CERT, or `cert` in the
#    system pip.conf; e.g. behind a TLS-inspecting egress proxy), a copy of that
#    bundle and only that. No software, other pip setting, index or wheel cache of
#    this machine goes in.
# Prints how long each step took.
set -euo pipefail
cd "$(dirname "$0")/.."

# FRESH_CACHE: where the root is cached (CI keeps it outside its throw-away clone).
STATE=${FRESH_CACHE:-.fresh-root}
BASE=$STATE/base
RUN=$STATE/run
SUITE=bookworm

if [ "$(id -u)" != 0 ]; then
    echo "make fresh-check: needs root (debootstrap, mounts, namespaces); run: sudo make fresh-check" >&2
    exit 1
fi

declare -a TIMINGS=()
step_start=0
begin() { step_start=$EPOCHREALTIME; echo "== fresh-check: $1"; }
done_step() {
    local took
    took=$(awk -v a="$step_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    TIMINGS+=("$(printf '%-44s %7s s' "$1" "$took")")
}

# The Debian mirror this machine's apt uses (deb822 or one-line format).
mirror() {
    local uri
    uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v -e security -e '^$' | grep debian | head -n 1 || true)
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 !~ /security/ && $2 ~ /debian/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
    echo "${FRESH_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

build_base() {
    if [ -x "$BASE/usr/bin/python3" ] && [ -x "$BASE/usr/bin/make" ]; then
        echo "   cached root: $BASE (rm -rf $BASE to rebuild it)"
        return
    fi
    command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
    rm -rf "$BASE.partial"
    # A partial root is never mistaken for the cache: it is renamed only when complete.
    debootstrap --variant=minbase --include=python3,make "$SUITE" "$BASE.partial" "$(mirror)" > "$STATE/debootstrap.log" 2>&1 \
        || { tail -n 20 "$STATE/debootstrap.log" >&2; echo "make fresh-check: debootstrap failed (log: $STATE/debootstrap.log)" >&2; exit 1; }
    mv "$BASE.partial" "$BASE"
}

fresh_copy() {
    rm -rf "$RUN"
    mkdir -p "$RUN/upper" "$RUN/work" "$RUN/root"
}

clone_head() {
    local head dest=$RUN/upper/root/bastion
    head=$(git rev-parse HEAD)
    mkdir -p "$RUN/upper/root"
    git clone --quiet --no-hardlinks . "$dest"
    git -C "$dest" checkout --quiet --detach "$head"
    echo "   commit $(git -C "$dest" log -1 --format='%h %s' | cut -c1-100)"
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
        echo "   note: this checkout has uncommitted changes; they are NOT in the clone"
    fi
}

# The fresh root sees, as its /sys/fs/cgroup, one new child cgroup per hierarchy
# (v1 memory and pids, or the v2 tree), as a container would. Bastion names its
# cgroups after the broker's pid and used to treat a bastion-PID whose /proc/PID was gone
# as stale: pids inside this pid namespace mean nothing on the host, so sharing the
# host's own hierarchy let brokers on either side delete each other's cgroups. (Names
# now carry the pid namespace and the broker's start time, and another namespace's are
# left alone, but a container's own subtree is still what a container would get.)
CG_TAG=fresh-check-$$
cgroup_subtrees() {
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        echo /sys/fs/cgroup
        return
    fi
    local controller
    for controller in memory pids; do
        [ -f "/sys/fs/cgroup/$controller/cgroup.procs" ] && echo "/sys/fs/cgroup/$controller"
    done
    return 0
}

delegate_cgroups() {
    local root=$1 hierarchy
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        mkdir -p "/sys/fs/cgroup/$CG_TAG"
        echo "+memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
        mount --bind "/sys/fs/cgroup/$CG_TAG" "$root/sys/fs/cgroup"
        return
    fi
    mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup "$root/sys/fs/cgroup"
    for hierarchy in $(cgroup_subtrees); do
        mkdir -p "$hierarchy/$CG_TAG" "$root/sys/fs/cgroup/${hierarchy##*/}"
        mount --bind "$hierarchy/$CG_TAG" "$root/sys/fs/cgroup/${hierarchy##*/}"
    done
}

# After the run: every process of the pid namespace is gone, so the subtree is empty.
remove_cgroups() {
    local hierarchy
    for hierarchy in $(cgroup_subtrees); do
        [ -d "$hierarchy/$CG_TAG" ] && find "$hierarchy/$CG_TAG" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    return 0
}

# The CA bundle the host's pip trusts, if the host chose one.
host_pip_ca() {
    local conf cert
    if [ -n "${PIP_CERT:-}" ] && [ -r "$PIP_CERT" ]; then echo "$PIP_CERT"; return; fi
    for conf in /etc/pip.conf /etc/xdg/pip/pip.conf; do
        cert=$(sed -n 's/^ *cert *= *//p' "$conf" 2>/dev/null | head -n 1)
        if [ -n "$cert" ] && [ -r "$cert" ]; then echo "$cert"; return; fi
    done
}

# Runs inside `unshare --mount --pid --fork`: assemble the root, enter it, run make demo.
inside() {
    local root=$RUN/root dev
    mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$RUN/upper,workdir=$RUN/work" "$root"
    mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
    mount -t tmpfs -o mode=755,nosuid dev "$root/dev"
    for dev in null zero full random urandom tty; do
        touch "$root/dev/$dev"
        mount --bind "/dev/$dev" "$root/dev/$dev"
    done
    ln -s /proc/self/fd "$root/dev/fd"
    mkdir "$root/dev/shm" "$root/dev/pts"
    mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"  # apt logs through a pty
    ln -s pts/ptmx "$root/dev/ptmx"
    mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
    delegate_cgroups "$root"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$root/tmp"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    local trust=() bundle
    bundle=$(host_pip_ca)
    if [ -n "$bundle" ]; then
        mkdir -p "$root/etc/ssl"
        cp "$bundle" "$root/etc/ssl/host-pip-ca.pem"
        trust=(PIP_CERT=/etc/ssl/host-pip-ca.pem)
    fi
    mkdir -p "$root/.oldroot"
    cd "$root"
    pivot_root . .oldroot
    cd /
    umount -l /.oldroot
    rmdir /.oldroot
    exec env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb LANG=C.UTF-8 "${trust[@]}" \
        sh -c 'cd /root/bastion && make demo && echo "fresh-check: seccomp binding used in this root: $(.venv/bin/python -c \
            "from broker.sandbox.seccomp_compile import binding, binding_name; print(binding_name(binding()))")"'
}

# Each line of make demo's output, prefixed with the seconds since it started;
# when the venv and the demo start is kept for the summary (deps runs before them).
stamp_lines() {
    local start=$EPOCHREALTIME line now
    : > "$RUN/marks"
    while IFS= read -r line; do
        now=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
        printf '[%6ss] %s\n' "$now" "$line"
        case "$line" in
            *"-m venv .venv"*) echo "venv $now" >> "$RUN/marks" ;;
            *"examples/demo.py"*) echo "demo $now" >> "$RUN/marks" ;;
        esac
    done
}

main() {
    mkdir -p "$STATE"
    STATE=$(cd "$STATE" && pwd)  # absolute: the namespace side changes directory
    BASE=$STATE/base
    RUN=$STATE/run
    begin "minimal Debian 12 root"; build_base; done_step "1. root (debootstrap, or the cache)"
    begin "throw-away copy of the root"; fresh_copy; done_step "2. throw-away overlay of the root"
    begin "clean clone of HEAD"; clone_head; done_step "3. clean clone of HEAD"
    begin "make demo inside the root, in its own mount and pid namespaces"
    export -f inside host_pip_ca delegate_cgroups cgroup_subtrees
    export BASE RUN CG_TAG
    set +e
    unshare --mount --pid --fork --propagation private bash -c inside 2>&1 | stamp_lines
    local status=${PIPESTATUS[0]}
    set -e
    remove_cgroups
    done_step "4. make demo (all of it)"
    summarise_marks
    echo
    echo "fresh-check timings:"
    printf '  %s\n' "${TIMINGS[@]}"
    if [ "$status" != 0 ]; then
        echo "fresh-check: FAILED: make demo exited with status $status inside the fresh root" >&2
        exit 1
    fi
    rm -rf "$RUN"  # the throw-away copy (~0.5 GB); kept after a failure, to look into
    echo "fresh-check: PASSED: make demo did all its set-up and ran on a fresh Debian 12"
}

# Split step 4 at the marks: deps (apt-get), venv (PyPI), the demo itself.
summarise_marks() {
    local venv demo total
    venv=$(awk '$1 == "venv" { print $2; exit }' "$RUN/marks")
    demo=$(awk '$1 == "demo" { print $2; exit }' "$RUN/marks")
    total=$(awk -v a="$step_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    [ -n "$venv" ] && [ -n "$demo" ] || return 0
    TIMINGS+=("$(printf '%-44s %7s s' "   4a. make deps (apt-get update + install)" "$venv")")
    TIMINGS+=("$(printf '%-44s %7s s' "   4b. venv + pip install from PyPI" "$(awk -v a="$venv" -v b="$demo" 'BEGIN { printf "%.1f", b - a }')")")
    TIMINGS+=("$(printf '%-44s %7s s' "   4c. examples/demo.py" "$(awk -v a="$demo" -v b="$total" 'BEGIN { printf "%.1f", b - a }')")")
}

main "$@"
