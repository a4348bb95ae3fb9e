#!/usr/bin/env bash
# fetch-kernels.sh SUITE: download Debian's cloud kernel of SUITE (bullseye:
# 5.10, bookworm: 6.1, bookworm-backports: the newest backport, 6.12), unpack
# it and cache the result, for the vmtest package to boot in QEMU. The kernel
# is never installed on the host: `apt-get download` + `dpkg-deb -x`.
#
# The LAST line on stdout is the absolute result directory; all other output
# goes to stderr.
#
# apt: the suites the host does not already list go into
# /etc/apt/sources.list.d/ngxprobe-kernels.sources (same URIs and keys as the
# main Debian entry), pinned at priority 1 by
# /etc/apt/preferences.d/ngxprobe-kernels, so that nothing on the host is
# ever installed or upgraded from them.
#
# Cache root: ${NGXPROBE_CACHE:-/var/cache/ngxprobe}
#   kernels/<package version>/   one per kernel package version
#     root/                      dpkg-deb -x of the package (boot/, lib/modules/)
#     INFO                       key: value lines (package, version, suite,
#                                release, image, config, modules)
#     .complete                  written last; its presence means "done"
set -euo pipefail

# Everything but the final result goes to stderr.
exec 3>&1 1>&2

suite=${1:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${NGXPROBE_CACHE:-/var/cache/ngxprobe}

# series: the upstream version the suite's kernel must start with ("" for
# any, newest wins); suites: where apt may take it from.
case "$suite" in
bullseye)
	series=5.10.
	suites=(bullseye bullseye-updates bullseye-security)
	;;
bookworm)
	series=6.1.
	suites=(bookworm bookworm-updates bookworm-security)
	;;
bookworm-backports)
	series=
	suites=(bookworm-backports)
	;;
*)
	echo "usage: $0 bullseye|bookworm|bookworm-backports" >&2
	exit 2
	;;
esac

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	SUDO=(sudo)
fi

"$here/../nginxtest/setup-deps.sh" vm

mkdir -p "$cache/kernels"
cache=$(cd "$cache" && pwd)
kernels=$cache/kernels

sources=/etc/apt/sources.list.d/ngxprobe-kernels.sources
prefs=/etc/apt/preferences.d/ngxprobe-kernels
main=/etc/apt/sources.list.d/debian.sources

# listed_suites: every suite some other apt source already lists.
listed_suites() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -f $f ]] || continue
		sed -nE 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+([^[:space:]]+).*/\2/p' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f && $f != "$sources" ]] || continue
		sed -nE 's/^[[:space:]]*Suites:[[:space:]]*//Ip' "$f" | tr ' \t' '\n\n'
	done
}

# uri_of SUFFIX: the URIs of the first "Types: deb" stanza of $main whose
# suites end with SUFFIX ("" for the main archive, "-security").
uri_of() {
	awk -v want="$1" '
		function flush() {
			if (deb && uris != "" && found == "") {
				n = split(suites, s, /[ \t]+/)
				for (i = 1; i <= n; i++) {
					if (s[i] == "") continue
					sec = (s[i] ~ /-security$/)
					if ((want == "-security") == sec) { found = uris; break }
				}
			}
			deb = 0; uris = ""; suites = ""
		}
		/^[ \t]*$/ { flush(); next }
		/^[ \t]*#/ { next }
		tolower($1) == "types:" { deb = ($0 ~ /[ \t]deb([ \t]|$)/) }
		tolower($1) == "uris:" { sub(/^[ \t]*[Uu][Rr][Ii][Ss]:[ \t]*/, ""); uris = $0 }
		tolower($1) == "suites:" { sub(/^[ \t]*[Ss][Uu][Ii][Tt][Ee][Ss]:[ \t]*/, ""); suites = $0 }
		END { flush(); print found }
	' "$main"
}

signed_by() {
	sed -nE 's/^[[:space:]]*Signed-By:[[:space:]]*//Ip' "$main" | head -n1
}

# ensure_sources: write the sources and pin files when they differ from what
# this script wants, then update the package lists. Under the apt lock.
ensure_sources() {
	if [[ ! -f $main ]]; then
		echo "fetch-kernels: no $main to derive the kernel suites' entry from" >&2
		exit 1
	fi
	local archive security key
	archive=$(uri_of "")
	security=$(uri_of -security)
	key=$(signed_by)
	if [[ -z $archive ]]; then
		echo "fetch-kernels: $main has no main archive entry" >&2
		exit 1
	fi
	local -A listed=()
	local s
	for s in $(listed_suites); do
		listed[$s]=1
	done
	local want=() want_sec=()
	for s in bullseye bullseye-updates bookworm bookworm-updates bookworm-backports; do
		[[ -n ${listed[$s]:-} ]] || want+=("$s")
	done
	for s in bullseye-security bookworm-security; do
		[[ -n ${listed[$s]:-} ]] || want_sec+=("$s")
	done
	local text pin
	text="# ngxprobe: Debian's kernels for internal/vmtest (fetch-kernels.sh);
# pinned at priority 1 in $prefs: nothing is installed from here.
"
	stanza() { # URIS SUITE...
		local uris=$1
		shift
		text+="
Types: deb
URIs: $uris
Suites: $*
Components: main
"
		[[ -n $key ]] && text+="Signed-By: $key
"
	}
	((${#want[@]})) && stanza "$archive" "${want[@]}"
	if ((${#want_sec[@]})); then
		if [[ -z $security ]]; then
			echo "fetch-kernels: $main has no security entry; skipping ${want_sec[*]}" >&2
		else
			stanza "$security" "${want_sec[@]}"
		fi
	fi
	pin="# ngxprobe: the kernel suites of $sources are only for apt-get download.
"
	for s in "${want[@]}" "${want_sec[@]}"; do
		pin+="
Package: *
Pin: release n=$s
Pin-Priority: 1
"
	done
	local changed=0
	if [[ ! -f $prefs ]] || [[ $(cat "$prefs") != "${pin%$'\n'}" ]]; then
		# The pins go in first, so the new suites are never seen unpinned.
		printf '%s' "$pin" | "${SUDO[@]}" tee "$prefs.tmp" >/dev/null
		"${SUDO[@]}" mv "$prefs.tmp" "$prefs"
		changed=1
	fi
	if [[ ! -f $sources ]] || [[ $(cat "$sources") != "${text%$'\n'}" ]]; then
		echo "fetch-kernels: adding ${want[*]} ${want_sec[*]} in $sources" >&2
		printf '%s' "$text" | "${SUDO[@]}" tee "$sources.tmp" >/dev/null
		"${SUDO[@]}" mv "$sources.tmp" "$sources"
		changed=1
	fi
	if ((changed)); then
		"${SUDO[@]}" apt-get update -q >&2
	fi
}

# candidates: "package version" lines of the cloud kernels of $suite that
# apt knows, newest first.
candidates() {
	local names pkg ver where s
	names=$(apt-cache pkgnames linux-image- 2>/dev/null |
		grep -E "^linux-image-${series//./\\.}[0-9].*-cloud-amd64-unsigned$" || true)
	[[ -n $names ]] || return 0
	# apt-cache madison: "pkg | version | URI suite/component arch Packages"
	while IFS='|' read -r pkg ver where; do
		pkg=${pkg// /}
		ver=${ver// /}
		[[ $where == *Packages* ]] || continue
		where=${where% Packages}
		where=${where% *}  # drop the architecture
		where=${where##* } # suite/component
		where=${where%%/*} # suite
		for s in "${suites[@]}"; do
			if [[ $where == "$s" ]]; then
				echo "$pkg $ver"
				break
			fi
		done
	done < <(apt-cache madison $names 2>/dev/null) | sort -u | sort -k2,2 -r -V
}

# newest_cached: the result directory of the newest complete cached kernel
# of $suite, or nothing.
newest_cached() {
	local d best="" best_ver="" v
	for d in "$kernels"/*/; do
		d=${d%/}
		[[ -f $d/.complete ]] || continue
		grep -qx "suite: $suite" "$d/INFO" || continue
		v=$(sed -n 's/^version: //p' "$d/INFO")
		if [[ -z $best_ver ]] || dpkg --compare-versions "$v" gt "$best_ver"; then
			best=$d
			best_ver=$v
		fi
	done
	[[ -n $best ]] && echo "$best"
	return 0
}

# --- 1. which packages: the apt lists, added and refreshed as needed -------
exec 8>"$cache/.kernels-apt.lock"
flock 8
ensure_sources
found=$(candidates)
if [[ -z $found ]]; then
	# Maybe the package lists are stale (or were never fetched).
	"${SUDO[@]}" apt-get update -q >&2 || true
	found=$(candidates)
fi
flock -u 8

# --- 2. download and unpack, once per package version ----------------------
# A mirror may list a version whose file it does not serve (seen: 404 for
# the security suite's newest kernel), so fall back to the next newest.
# Versions that failed are remembered in .unavailable for a day.
unavailable=$kernels/.unavailable
if [[ -f $unavailable ]] && [[ -n $(find "$unavailable" -mmin +1440) ]]; then
	rm -f "$unavailable"
fi

# fetch PKG VERSION DIR: download and unpack into DIR, atomically.
fetch() {
	local pkg=$1 version=$2 dir=$3 tmp deb image release modules m
	tmp=$(mktemp -d "$kernels/.tmp.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" EXIT
	chmod 755 "$tmp"
	if ! (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" >&2); then
		rm -rf "$tmp"
		trap - EXIT
		return 1
	fi
	deb=$(find "$tmp" -maxdepth 1 -name '*.deb' | head -n1)
	if [[ -z $deb ]]; then
		echo "fetch-kernels: apt-get download made no .deb" >&2
		exit 1
	fi
	dpkg-deb -x "$deb" "$tmp/root"
	rm -f "$deb"
	image=$(find "$tmp/root/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
	if [[ -z $image ]]; then
		echo "fetch-kernels: $pkg has no /boot/vmlinuz-*" >&2
		exit 1
	fi
	release=${image##*/vmlinuz-}
	modules=
	for m in lib/modules usr/lib/modules; do
		if [[ -d $tmp/root/$m/$release ]]; then
			modules=$m/$release
			break
		fi
	done
	if [[ -z $modules ]]; then
		echo "fetch-kernels: $pkg has no modules directory for $release" >&2
		exit 1
	fi
	# The package leaves modules.dep to its postinst; make it here, so that
	# modprobe works in the guest. depmod -b B reads B/lib/modules/<release>.
	if command -v depmod >/dev/null; then
		depmod -b "$tmp/root/${modules%lib/modules/*}" "$release" ||
			echo "fetch-kernels: depmod failed; modprobe will not work in the guest" >&2
	fi
	{
		echo "package: $pkg"
		echo "version: $version"
		echo "suite: $suite"
		echo "release: $release"
		echo "image: root/boot/vmlinuz-$release"
		echo "config: root/boot/config-$release"
		echo "modules: root/$modules"
		echo "fetched: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	} >"$tmp/INFO"
	touch "$tmp/.complete"
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
}

result=
while read -r pkg version; do
	[[ -n $pkg ]] || continue
	dir=$kernels/$version
	if [[ -f $dir/.complete ]]; then
		result=$dir
		break
	fi
	if [[ -f $unavailable ]] && grep -qxF "$pkg=$version" "$unavailable"; then
		continue
	fi
	exec 9>"$kernels/.$version.lock"
	flock 9
	if [[ ! -f $dir/.complete ]]; then
		echo "fetch-kernels: $pkg=$version ($suite) -> $dir" >&2
		if ! fetch "$pkg" "$version" "$dir"; then
			echo "fetch-kernels: $pkg=$version can't be downloaded; trying an older one" >&2
			echo "$pkg=$version" >>"$unavailable"
			flock -u 9
			continue
		fi
	fi
	flock -u 9
	result=$dir
	break
done <<<"$found"

if [[ -z $result ]]; then
	result=$(newest_cached)
	if [[ -z $result ]]; then
		echo "fetch-kernels: no linux-image-${series}*-cloud-amd64-unsigned of ${suites[*]} could be had" >&2
		exit 1
	fi
	echo "fetch-kernels: apt gives no $suite cloud kernel; using the cached $result" >&2
fi
echo "$result" >&3
