#!/usr/bin/env bash
# build-deb.sh: build Debian's nginx source package as Debian does, with its
# own debian/rules and flags (`dpkg-buildpackage -b -uc -us`): stripped
# binaries, -dbgsym packages made by dh_strip and dh_dwz, and the stream, mail
# and other modules as dynamic .so files in libnginx-mod-* packages. It is the
# nginx people actually run, for the ngxprobe tests; the result is cached.
#
# The LAST line on stdout is the absolute result directory; all other output
# goes to stderr, and the build's own output to the log in that directory.
#
# Cache root: ${NGXPROBE_CACHE:-/var/cache/ngxprobe}
#   src/                 `apt-get source nginx` (shared with build-nginx.sh):
#                        the .dsc, its tarballs and the unpacked tree
#   nginx-deb-<hash8>/   one per (.dsc checksum, this script's content)
#     *.deb, *.ddeb      every binary package, -dbgsym ones included
#     *.changes, *.buildinfo
#     build/             the tree dpkg-buildpackage built in
#     build.log          dpkg-buildpackage's output (its tail on failure)
#     BUILD_INFO         key, version, build seconds
#     .complete          written last; its presence means "done"
set -euo pipefail

# Everything but the final result goes to stderr.
exec 3>&1 1>&2

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self=$here/$(basename "${BASH_SOURCE[0]}")
cache=${NGXPROBE_CACHE:-/var/cache/ngxprobe}

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	SUDO=(sudo)
fi

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# The source fetch (deb-src entries enabled when there are none, the mirror
# fallbacks, the lock on src/) is build-nginx.sh's: its functions are loaded
# from there rather than copied, so both builds share one download.
load_functions() {
	local from=$1 name
	shift
	for name in "$@"; do
		# shellcheck disable=SC1090
		source <(awk -v n="$name" '$0 ~ "^" n "\\(\\) \\{" {on = 1} on {print} on && /^\}/ {exit}' "$from")
		if ! declare -F "$name" >/dev/null; then
			echo "build-deb: $from defines no $name()" >&2
			exit 1
		fi
	done
}
load_functions "$here/build-nginx.sh" have_deb_src enable_deb_src get_source fetch_source

# --- 1. system packages ------------------------------------------------------
"$here/setup-deps.sh" deb

# --- 2. Debian's nginx source package, fetched once --------------------------
srcroot=$cache/src
fetch_source
pristine=$srcroot/$(cat "$srcroot/.complete")
deb_version=$(dpkg-parsechangelog -l "$pristine/debian/changelog" -S Version)
dsc=$srcroot/nginx_${deb_version#*:}.dsc
if [[ ! -f $dsc ]]; then
	echo "build-deb: no $dsc beside $pristine" >&2
	exit 1
fi

# --- 3. the build, keyed by the .dsc and this script -------------------------
dsc_sum=$(sha256sum "$dsc" | cut -d' ' -f1)
self_sum=$(sha256sum "$self" | cut -d' ' -f1)
key="dsc=$(basename "$dsc") dsc-sha256=$dsc_sum build-deb.sh-sha256=$self_sum arch=$(dpkg --print-architecture)"
hash=$(printf '%s' "$key" | sha256sum | cut -c1-8)
dir=$cache/nginx-deb-$hash
log=$dir/build.log

build() {
	local builddir=$dir/build/nginx-${deb_version#*:}
	rm -rf "$dir"
	mkdir -p "$dir/build"
	: >"$log"
	# On any failure from here on: the log's tail, then the error.
	trap 'rc=$?; if ((rc)); then echo "build-deb: failed ($rc); last lines of $log:" >&2; tail -n 60 "$log" >&2; fi' EXIT

	dpkg-source -x "$dsc" "$builddir" >>"$log" 2>&1
	# The exact Build-Depends of this .dsc (setup-deps.sh has the usual ones).
	if ! (cd "$builddir" && dpkg-checkbuilddeps) >>"$log" 2>&1; then
		echo "build-deb: apt-get build-dep $(basename "$dsc")" >&2
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -q \
			-o DPkg::Lock::Timeout=600 "$dsc" >>"$log" 2>&1
	fi

	echo "build-deb: dpkg-buildpackage nginx $deb_version in $builddir (log: $log)" >&2
	local start end
	start=$(date +%s)
	(
		cd "$builddir"
		# The package's own flags only: nothing from the caller's environment
		# that dpkg-buildflags or debhelper would add to them.
		unset DEB_BUILD_PROFILES DEB_BUILD_MAINT_OPTIONS MAKEFLAGS
		for v in $(compgen -e | grep -E '^DEB_[A-Z]+FLAGS(_MAINT)?_(SET|APPEND|PREPEND|STRIP)$' || true); do
			unset "$v"
		done
		export DEB_BUILD_OPTIONS=parallel=2 LC_ALL=C.UTF-8
		exec dpkg-buildpackage -b -uc -us
	) >>"$log" 2>&1
	end=$(date +%s)

	local f n=0
	for f in "$dir"/build/*.deb "$dir"/build/*.ddeb "$dir"/build/*.changes "$dir"/build/*.buildinfo; do
		[[ -e $f ]] || continue
		mv "$f" "$dir/"
		n=$((n + 1))
	done
	if ! compgen -G "$dir/nginx_*.deb" >/dev/null || ! compgen -G "$dir/nginx-dbgsym_*.*deb" >/dev/null; then
		echo "build-deb: dpkg-buildpackage made no nginx or nginx-dbgsym package" >&2
		exit 1
	fi
	{
		echo "key: $key"
		echo "version: $deb_version"
		echo "build_seconds: $((end - start))"
		echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	} >"$dir/BUILD_INFO"
	echo "build-deb: nginx $deb_version built in $((end - start)) s; $n files in $dir" >&2
	touch "$dir/.complete"
	trap - EXIT
}

if [[ ! -f $dir/.complete ]]; then
	exec 9>"$cache/.nginx-deb-$hash.lock"
	flock 9
	if [[ ! -f $dir/.complete ]]; then
		build
	fi
	flock -u 9
fi

echo "$dir" >&3
