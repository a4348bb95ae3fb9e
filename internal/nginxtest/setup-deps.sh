#!/usr/bin/env bash
# setup-deps.sh [build] [deb] [vm] [lua]: install every Debian package the
# ngxprobe tests need ("build": only what building the test nginx needs).
#
# With "deb" it also installs what build-deb.sh and the packaged-nginx tests
# need: Debian's package build tools (dpkg-buildpackage, dh, dh_dwz), the
# nginx source package's Build-Depends, and the debuginfod server.
#
# With "vm" it also installs what internal/vmtest needs to boot Debian's
# kernels in QEMU: the emulator, a static busybox for the initramfs, and the
# tools fetch-kernels.sh uses on the kernel packages.
#
# With "lua" (build-openresty.sh passes "deb lua") it also installs the
# archive's Build-Depends of Debian's luajit2, libnginx-mod-http-ndk and
# libnginx-mod-http-lua source packages; the others (nginx-dev, the
# luajit2 -dev and ndk -dev packages) are the ones build-openresty.sh builds,
# installed only while it builds.
#
# Idempotent and fast: it asks dpkg first and only runs apt-get when a
# package is missing. Must run as root (or via sudo) when something is missing.
set -euo pipefail

PKGS=(
	# nginx build (./configure + make) and `apt-get source nginx`
	gcc make dpkg-dev patch xz-utils libpcre2-dev libssl-dev zlib1g-dev
	# locking in build-nginx.sh
	util-linux
)
# "build" (build-nginx.sh, make demo) stops there: nothing the demo does
# not need is installed or upgraded.
[[ " $* " == *" build "* ]] || PKGS+=(
	# test tooling (dwz: the symbols tests make DWARF supplementary files
	# with dwz -m, as Debian's dh_dwz does)
	dwarves gdb curl wrk binutils debuginfod dwz
	# e2e: leftover uprobe and program checks
	bpftool
	# libc frames named in stacks (and by gdb); bpftrace for the benchmarks
	libc6-dbg bpftrace
)

if [[ " $* " == *" deb "* ]]; then
	PKGS+=(
		# dpkg-buildpackage with the package's own rules; dh_dwz needs dwz
		dpkg-dev debhelper dwz
		# Build-Depends of Debian's nginx 1.22.1 (build-deb.sh also runs
		# `apt-get build-dep` on the .dsc, which is authoritative)
		libexpat1-dev libgd-dev libgeoip-dev libpcre2-dev libperl-dev
		libssl-dev libxslt1-dev po-debconf zlib1g-dev
		# the debuginfod server the packaged-nginx tests start; its -U scan
		# of .deb/.ddeb archives runs bsdtar
		debuginfod libarchive-tools
	)
fi

if [[ " $* " == *" vm "* ]]; then
	PKGS+=(
		# the emulator (TCG, or KVM where it works) with virtio-9p
		qemu-system-x86
		# the initramfs's shell, mount, insmod, poweroff
		busybox-static
		# fetch-kernels.sh: depmod for the extracted modules (so modprobe
		# works in the guest), .ko.xz/.ko.zst decompression, the lock
		kmod xz-utils zstd util-linux
	)
fi

if [[ " $* " == *" lua "* ]]; then
	PKGS+=(
		# dpkg-buildpackage, dh (debhelper-compat 13), dh_dwz
		dpkg-dev debhelper dwz
		# libnginx-mod-http-lua links PCRE1 (-lpcre) for ngx.re
		libpcre3-dev
	)
fi

missing=()
for p in "${PKGS[@]}"; do
	st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	if [[ "$st" != "installed" ]]; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} == 0)); then
	exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	SUDO=(sudo)
fi
# apt's output goes to a log; one line says what is installed, and
# another what apt upgraded on the way, so that nothing changes unsaid.
log=${NGXPROBE_CACHE:-/var/cache/ngxprobe}/setup-deps.log
"${SUDO[@]}" mkdir -p "$(dirname "$log")"
printf 'installing Debian packages: %s ... ' "${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { "${SUDO[@]}" apt-get update -q && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } 2>&1 | "${SUDO[@]}" tee "$log" >/dev/null; then
	echo "failed; the end of $log:" >&2
	tail -n 30 "$log" >&2
	exit 1
fi
echo "done (log: $log)" >&2
upgraded=$(sed -n 's/^Unpacking \([^ ]*\) (\([^)]*\)) over (\([^)]*\)).*/\1 \3 -> \2/p' "$log" | paste -sd, -)
[[ -z $upgraded ]] || echo "setup-deps: apt also upgraded: $upgraded" >&2
