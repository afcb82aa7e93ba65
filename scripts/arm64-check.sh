#!/usr/bin/env bash
# Install and run edgeface on an emulated Raspberry Pi (Debian bookworm arm64, Python 3.11, wheels only)
# and check that it computes what the host computes: every model in models/manifest.json loads and runs,
# embeddings of real photos agree with the host's (cosine), detections and landmarks match.
#
# No binfmt registration (that needs host privileges): the arm64 python runs through
# `qemu-aarch64-static -L ROOT`. The root is debootstrap's first stage (which unpacks the base set)
# plus python3.11's packages unpacked from the debs it downloaded; it is cached outside the repository
# in $EDGEFACE_ARM64_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/edgeface/arm64) with the aarch64 wheels.
# Needs scripts/setup.sh first (the host side runs in .venv). Extra arguments: none.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
started=$(date +%s)
log() { echo "arm64-check: $*" >&2; }
fail() { echo "arm64-check: FAILED: $*" >&2; exit 1; }
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

cache="${EDGEFACE_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeface/arm64}"
mirror="${EDGEFACE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
# python3.11 and the libraries its standard library loads; debootstrap resolves their dependencies.
root_packages=python3.11,libpython3.11-stdlib
root="$cache/root-$suite"
root_key="$suite $root_packages 1"
# A Raspberry Pi 4's core (no dot-product instructions: XNNPACK's plain NEON kernels); and the same
# CPU described in /proc/cpuinfo, which LiteRT's CPU detection reads and crashes on when it finds the
# host's x86 one there.
qemu_cpu="${EDGEFACE_ARM64_CPU:-cortex-a72}"
probe_timeout_s=900

host_python=.venv/bin/python
[ -x "$host_python" ] || fail "no .venv: run scripts/setup.sh first"
mkdir -p "$cache"

# --- tools ----------------------------------------------------------------------------------
missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} with apt"
    sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PATH="$PATH:/usr/sbin"

# --- the arm64 root -------------------------------------------------------------------------
fake_cpuinfo() {
    local n i
    n=$(nproc)
    for ((i = 0; i < n; i++)); do
        # Cortex-A72 (implementer 0x41 Arm, part 0xd08), as a Raspberry Pi 4 reports it.
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n'
        printf 'CPU revision\t: 3\n\n'
    done
}

build_root() {
    local tmp="$root.partial"
    sudo_ rm -rf "$tmp"
    mkdir -p "$cache/debs"
    log "building the $suite arm64 root in $root (debootstrap first stage, $mirror)"
    sudo_ debootstrap --foreign --arch=arm64 --variant=minbase --include="$root_packages" \
        --cache-dir="$cache/debs" "$suite" "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
        fail "debootstrap failed; see $cache/debootstrap.log"
    # The first stage unpacked only the base set; unpack everything it fetched, python3.11 included.
    # --keep-directory-symlink: the packages' /lib and /bin must go through usrmerge's symlinks.
    local pkg deb
    while read -r pkg deb; do
        dpkg-deb --fsys-tarfile "$tmp/$deb" | sudo_ tar -x -C "$tmp" --keep-directory-symlink ||
            fail "cannot unpack $pkg ($deb)"
    done <"$tmp/debootstrap/debpaths"
    [ -x "$tmp/usr/bin/python3.11" ] || fail "the $suite root has no /usr/bin/python3.11"
    # `qemu -L` looks every absolute path up in the root first: a /proc/cpuinfo file there is what
    # the emulated process reads. debootstrap leaves /proc as a link to the host's; make it a folder.
    sudo_ rm -rf "$tmp/proc"
    sudo_ mkdir -p "$tmp/proc"
    fake_cpuinfo | sudo_ tee "$tmp/proc/cpuinfo" >/dev/null
    sudo_ rm -rf "$tmp/var/cache/apt/archives"/*.deb "$root"
    echo "$root_key" | sudo_ tee "$tmp/.edgeface-root" >/dev/null
    sudo_ mv "$tmp" "$root"
}
if [ "$(cat "$root/.edgeface-root" 2>/dev/null)" != "$root_key" ]; then
    build_root
else
    log "reusing the arm64 root in $root"
fi
arm() { qemu-aarch64-static -cpu "$qemu_cpu" -L "$root" "$@"; }
glibc=$(arm "$root/usr/lib/aarch64-linux-gnu/libc.so.6" | sed -n 's/.*release version \([0-9.]*\)\..*/\1/p')
[ -n "$glibc" ] || fail "cannot run the arm64 C library under qemu-aarch64-static"
pyver=$(arm "$root/usr/bin/python3.11" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
    fail "python3.11 does not start in the arm64 root"
log "arm64 root: Debian $suite, glibc $glibc, Python $pyver, CPU $qemu_cpu"

# --- aarch64 wheels -------------------------------------------------------------------------
# Keyed by what decides the resolution; a new dependency or pin gives a new site directory.
key=$( { cat pyproject.toml scripts/constraints.txt scripts/nodeps.txt scripts/wheels.py; echo "$pyver $glibc"; } |
    sha256sum | cut -c1-16)
site="$cache/site-$key"
if [ ! -f "$site/.complete" ]; then
    rm -rf "$site" "$site.partial"
    find "$cache" -maxdepth 1 -name 'site-*' -type d -exec rm -rf {} +
    log "installing the runtime dependencies as cp${pyver/./} aarch64 wheels (manylinux_2_17..$glibc)"
    "$host_python" scripts/wheels.py install --python "$pyver" --arch aarch64 --glibc "$glibc" \
        --target "$site.partial" --wheelhouse "$cache/wheelhouse" || fail "cannot install the aarch64 wheels"
    touch "$site.partial/.complete"
    mv "$site.partial" "$site"
else
    log "reusing the aarch64 wheels in $site"
fi
size=$(du -sm "$site" | cut -f1)
log "installed runtime dependencies (aarch64): ${size} MB"

# --- probe on both sides, compare -----------------------------------------------------------
photos=$("$host_python" -c 'from edgeface.samples import ensure_samples; print(ensure_samples())')
work=$(mktemp -d "${TMPDIR:-/tmp}/edgeface-arm64.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$host_python" scripts/arm64_probe.py probe --photos "$photos" --out "$work/x86_64.npz" ||
    fail "the host probe failed (see above)"
log "running the probe under qemu-aarch64 ($qemu_cpu)"
# The repository is imported from its checkout, the dependencies from the aarch64 site directory only.
env -u PYTHONHOME PYTHONNOUSERSITE=1 PYTHONPATH="$repo:$site" \
    timeout "$probe_timeout_s" qemu-aarch64-static -cpu "$qemu_cpu" -L "$root" "$root/usr/bin/python3.11" \
    scripts/arm64_probe.py probe --photos "$photos" --reference "$work/x86_64.npz" --out "$work/aarch64.npz" ||
    fail "the aarch64 probe failed or timed out after ${probe_timeout_s}s (see above)"
"$host_python" scripts/arm64_probe.py compare "$work/x86_64.npz" "$work/aarch64.npz" ||
    fail "aarch64 results differ from the host's (FAIL lines above)"
log "ok in $(($(date +%s) - started)) s"
