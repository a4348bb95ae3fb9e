#!/usr/bin/env bash
# build-nginx.sh [o2|lto]: build Debian's nginx source with debug info and no
# frame pointers, for the ngxprobe tests, and cache the result.
#
# The LAST line on stdout is the absolute install prefix (it holds
# sbin/nginx); all other output goes to stderr. $prefix/SOURCE_DIR holds the
# path of the (configured and built) source tree used for the build.
#
# Cache root: ${NGXPROBE_CACHE:-/var/cache/ngxprobe}
#   src/                         pristine `apt-get source nginx` tree (once)
#   nginx-<variant>-<hash8>/     one per (nginx version, variant flags)
#     nginx-<ver>/               copy of the source tree, built in place (objs/)
#     install/                   --prefix: sbin/nginx, conf/, ... ; SOURCE_DIR
#     .complete                  written last; its presence means "done"
set -euo pipefail

# Everything but the final result goes to stderr.
exec 3>&1 1>&2

variant=${1:-o2}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${NGXPROBE_CACHE:-/var/cache/ngxprobe}

case "$variant" in
o2)
	cc_opt='-g -O2 -fomit-frame-pointer'
	ld_opt=''
	;;
lto)
	cc_opt='-g -O2 -fomit-frame-pointer -flto=2'
	ld_opt='-flto=2'
	;;
*)
	echo "usage: $0 [o2|lto]" >&2
	exit 2
	;;
esac

modules=(
	--with-http_ssl_module
	--with-http_realip_module
	--with-http_stub_status_module
	--with-http_v2_module
	--with-stream
	--with-threads
)

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	SUDO=(sudo)
fi

mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

have_deb_src() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -f $f ]] && grep -Eq '^[[:space:]]*deb-src[[:space:]]' "$f" && return 0
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] && grep -Eiq '^[[:space:]]*Types:.*deb-src' "$f" && return 0
	done
	return 1
}

enable_deb_src() {
	local main=/etc/apt/sources.list.d/debian.sources
	local out=/etc/apt/sources.list.d/ngxprobe-src.sources
	if [[ ! -f $main ]]; then
		echo "build-nginx: no deb-src entry and no $main to derive one from" >&2
		exit 1
	fi
	echo "build-nginx: enabling source packages in $out" >&2
	# Same stanzas (URIs, suites, keys) as the binary entries, for sources.
	sed -E 's/^([[:space:]]*Types:[[:space:]]*)deb[[:space:]]*$/\1deb-src/' "$main" |
		"${SUDO[@]}" tee "$out" >/dev/null
	"${SUDO[@]}" apt-get update -q >&2
}

# --- 1. system packages ------------------------------------------------------
"$here/setup-deps.sh" build

# --- 2. Debian's nginx source, fetched once ----------------------------------
# get_source DIR: `apt-get source nginx` into DIR. A mirror may list a source
# version whose files it does not serve (seen: the security suite's newest
# nginx answered 404), so fall back to every other listed version, newest
# first.
get_source() {
	local tmp=$1 v
	(cd "$tmp" && apt-get source -q nginx >&2) && return 0
	for v in $(apt-cache showsrc nginx 2>/dev/null | sed -n 's/^Version: //p' | sort -u -r -V); do
		rm -rf "${tmp:?}"/*
		echo "build-nginx: retrying with nginx=$v" >&2
		(cd "$tmp" && apt-get source -q "nginx=$v" >&2) && return 0
	done
	return 1
}
srcroot=$cache/src
fetch_source() {
	exec 8>"$cache/.src.lock"
	flock 8
	if [[ -f $srcroot/.complete ]]; then
		flock -u 8
		return
	fi
	have_deb_src || enable_deb_src
	local tmp
	tmp=$(mktemp -d "$cache/src.tmp.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	echo "build-nginx: apt-get source nginx -> $srcroot" >&2
	if ! get_source "$tmp"; then
		# Maybe the package lists are stale (or were never fetched).
		"${SUDO[@]}" apt-get update -q >&2
		get_source "$tmp"
	fi
	local d
	d=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d -name 'nginx-*' | head -n1)
	if [[ -z $d || ! -f $d/src/core/nginx.h ]]; then
		echo "build-nginx: apt-get source did not produce an nginx tree" >&2
		exit 1
	fi
	basename "$d" >"$tmp/.complete"
	rm -rf "$srcroot"
	mv "$tmp" "$srcroot"
	trap - EXIT
	flock -u 8
}
fetch_source
pristine=$srcroot/$(cat "$srcroot/.complete")

nginx_version=$(sed -nE 's/^#define NGINX_VERSION[[:space:]]+"([^"]+)".*/\1/p' "$pristine/src/core/nginx.h")
deb_version=$(dpkg-parsechangelog -l "$pristine/debian/changelog" -S Version 2>/dev/null || echo unknown)

# --- 3. the build, keyed by version + full flags -----------------------------
key="nginx=$nginx_version debian=$deb_version variant=$variant cc-opt=$cc_opt ld-opt=$ld_opt modules=${modules[*]}"
hash=$(printf '%s' "$key" | sha256sum | cut -c1-8)
dir=$cache/nginx-$variant-$hash
prefix=$dir/install
builddir=$dir/nginx-$nginx_version

if [[ ! -f $dir/.complete ]]; then
	exec 9>"$cache/.nginx-$variant-$hash.lock"
	flock 9
	if [[ ! -f $dir/.complete ]]; then
		start=$(date +%s)
		rm -rf "$dir"
		mkdir -p "$dir"
		# configure and cc go to a log: one progress line here, and the
		# log's tail only when the build fails.
		log=$dir/build.log
		printf 'building test nginx %s (%s) ... ' "$nginx_version" "$variant" >&2
		cp -a "$pristine" "$builddir"
		rm -rf "$builddir/objs" "$builddir/Makefile"
		if ! (
			cd "$builddir"
			conf=(
				--prefix="$prefix"
				"${modules[@]}"
				--with-cc-opt="$cc_opt"
			)
			if [[ -n $ld_opt ]]; then
				conf+=(--with-ld-opt="$ld_opt")
			fi
			./configure "${conf[@]}"
			make -j2
			make install
		) >"$log" 2>&1; then
			echo "failed; the end of $log:" >&2
			tail -n 40 "$log" >&2
			exit 1
		fi
		end=$(date +%s)
		echo "$((end - start)) s, log: $log" >&2
		printf '%s\n' "$builddir" >"$prefix/SOURCE_DIR"
		{
			echo "key: $key"
			echo "build_seconds: $((end - start))"
			echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
		} >"$dir/BUILD_INFO"
		touch "$dir/.complete"
	fi
	flock -u 9
fi

echo "$prefix" >&3
