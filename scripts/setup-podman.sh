#!/usr/bin/env bash
# Podman as the container engine of the embedded provider's container runtime and of
# tests/containers: installs it (Debian/Ubuntu, apt), configures it for machines like the
# project's CI, and starts its Docker Engine API service. Idempotent: run it as often as
# you like; what is already done is skipped.
#
#   eval "$(./scripts/setup-podman.sh)"     # exports DOCKER_HOST
#
# Everything is logged on stderr; stdout carries only `export DOCKER_HOST=...`.
# OSCAR_FAAS_PODMAN_SOCKET (default /run/oscar-faas-podman.sock) picks the API socket.
#
# Why each step (see also oscar_faas/launchers/containers/engine.py):
# * runc, not crun (podman's default): crun fails on hybrid cgroup hosts with
#   "crun: cgroups in hybrid mode not supported".
# * default_ulimits: podman's defaults (nofile 1048576) exceed the hard limits of many CI
#   containers, and every container then fails with
#   "setrlimit RLIMIT_NOFILE: Operation not permitted".
# * busybox-static, musl: tests build their images offline from them (no registry is
#   reachable): a busybox-only image, and one with the musl loader as on Alpine.
set -euo pipefail

socket=$(realpath -m "${OSCAR_FAAS_PODMAN_SOCKET:-/run/oscar-faas-podman.sock}")
conf=/etc/containers/containers.conf
log=$(realpath -m "${OSCAR_FAAS_PODMAN_LOG:-/var/log/oscar-faas-podman.log}")
marker="# written by oscar-faas scripts/setup-podman.sh"

say() { echo "setup-podman: $*" >&2; }

if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
    as_root() { sudo "$@"; }
else
    say "needs root (or sudo) to install packages and run the engine"
    exit 1
fi

# ---- packages
missing=()
for pkg in podman runc busybox-static musl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
        install -y -q --no-install-recommends "${missing[@]}" >&2
else
    say "podman, runc, busybox-static and musl are installed"
fi

# ---- configuration
wanted="$marker
[containers]
default_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]

[engine]
runtime = \"runc\""
if [ -f "$conf" ] && [ "$(cat "$conf")" = "$wanted" ]; then
    say "$conf is up to date"
else
    if [ -f "$conf" ] && ! grep -qF "$marker" "$conf" && [ ! -e "$conf.orig-oscar-faas" ]; then
        say "keeping the previous $conf as $conf.orig-oscar-faas"
        as_root cp -p "$conf" "$conf.orig-oscar-faas"
    fi
    as_root mkdir -p "$(dirname "$conf")"
    printf '%s\n' "$wanted" | as_root tee "$conf" >/dev/null
    say "wrote $conf"
fi

# ---- the Docker Engine API service
ping() { curl -fsS --max-time 5 --unix-socket "$socket" http://d/_ping >/dev/null 2>&1; }
if ping; then
    say "the API service already answers on $socket"
else
    say "starting podman system service on $socket (log: $log)"
    as_root rm -f "$socket"
    # setsid + nohup: the service outlives this script and the CI step that ran it. From /:
    # conmon inherits the service's working directory, and once the folder this ran in is
    # removed (a clone, a worktree) every container start fails with "write child: broken
    # pipe" ("[conmon:e] Failed to get working directory" in the log).
    cd /
    as_root setsid nohup podman system service --time=0 "unix://$socket" \
        >>"$log" 2>&1 </dev/null &
    cd "$OLDPWD"
    for _ in $(seq 1 60); do
        ping && break
        sleep 0.5
    done
    if ! ping; then
        say "the API service did not answer on $socket within 30 s; its log:"
        tail -n 20 "$log" >&2 || true
        exit 1
    fi
    say "the API service answers on $socket"
fi

echo "export DOCKER_HOST=unix://$socket"
