#!/usr/bin/env bash
# build-openresty.sh: build OpenResty's parts as Debian packages them, with
# their own debian/rules (`dpkg-buildpackage -b -uc -us`): the source packages
# luajit2 (OpenResty's LuaJIT fork), libnginx-mod-http-ndk (ngx_devel_kit) and
# libnginx-mod-http-lua (lua-nginx-module), the two modules against the nginx
# that build-deb.sh builds (its nginx-dev), so that the packaged nginx loads
# them. Everything comes out stripped, with -dbgsym packages (dh_strip,
# dh_dwz). The result is cached.
#
# The LAST line on stdout is the absolute result directory; all other output
# goes to stderr, and the builds' own output to the log in that directory.
#
# While it builds, it installs (under the package lock the Go tests' InstallDebs
# takes, $cache/.packages.lock, with services denied by policy-rc.d) the
# nginx-dev of build-deb.sh with its nginx and nginx-common (unless that
# version is installed already), then the fresh luajit2 and ndk packages the
# next build needs; libluajit2-5.1-2 conflicts with the archive's
# libluajit-5.1-2 (which wrk uses), so that one is removed for the time.
# Afterwards every package is put back as it was.
#
# Cache root: ${NGXPROBE_CACHE:-/var/cache/ngxprobe}
#   src-openresty/          `apt-get source --download-only` of the three
#                           source packages; .complete lists their .dsc files
#   openresty-deb-<hash8>/  one per (the three .dsc checksums, the nginx-deb
#                           build's directory, this script's content)
#     *.deb, *.ddeb         every binary package, -dbgsym ones included
#     *.changes, *.buildinfo
#     build/<source>/       the trees dpkg-buildpackage built in
#     build.log             the builds' output (its tail on failure)
#     BUILD_INFO            key, versions, nginx-deb dir, build seconds
#     .complete             written last; its presence means "done"
set -euo pipefail
exec 3>&1 1>&2 # fd 3: the result line; the rest to stderr

self=$(realpath "${BASH_SOURCE[0]}")
here=${self%/*}
cache=$(mkdir -p "${NGXPROBE_CACHE:-/var/cache/ngxprobe}" && cd "${NGXPROBE_CACHE:-/var/cache/ngxprobe}" && pwd)
SUDO=()
((EUID == 0)) || SUDO=(sudo)

# build-deb.sh's load_functions, and with it build-nginx.sh's deb-src setup.
# shellcheck disable=SC1090
source <(awk '/^load_functions\(\) \{/ {on = 1} on {print} on && /^\}/ {exit}' "$here/build-deb.sh")
load_functions "$here/build-nginx.sh" have_deb_src enable_deb_src

sources=(luajit2 libnginx-mod-http-ndk libnginx-mod-http-lua)

# --- 1. system packages ------------------------------------------------------
"$here/setup-deps.sh" deb lua

# --- 2. the nginx packages the modules are built against ---------------------
nginx_dir=$(bash "$here/build-deb.sh" | tail -n1)
if [[ ! -f $nginx_dir/.complete ]] || ! compgen -G "$nginx_dir/nginx-dev_*.deb" >/dev/null; then
	echo "build-openresty: build-deb.sh gave no nginx-dev package in '$nginx_dir'" >&2
	exit 1
fi

# --- 3. the source packages, fetched once ------------------------------------
srcroot=$cache/src-openresty

# get_sources DIR: `apt-get source --download-only` of every source package
# into DIR; for one that fails, every other version the lists name, newest
# first (a mirror may list a version whose files it does not serve).
get_sources() {
	local tmp=$1 p v
	for p in "${sources[@]}"; do
		(cd "$tmp" && apt-get source -q --download-only "$p" >&2) && continue
		for v in $(apt-cache showsrc "$p" 2>/dev/null | sed -n 's/^Version: //p' | sort -u -r -V); do
			echo "build-openresty: retrying with $p=$v" >&2
			(cd "$tmp" && apt-get source -q --download-only "$p=$v" >&2) && continue 2
		done
		return 1
	done
}

# Once, under a lock, into $srcroot.tmp, renamed when complete; .complete
# names one .dsc per source package (the newest, should there be more). A
# failure is retried once after apt-get update (stale or no package lists).
exec 8>"$cache/.src-openresty.lock"
flock 8
if [[ ! -f $srcroot/.complete ]]; then
	have_deb_src || enable_deb_src
	echo "build-openresty: apt-get source ${sources[*]} -> $srcroot" >&2
	rm -rf "$srcroot.tmp" && mkdir -p "$srcroot.tmp"
	get_sources "$srcroot.tmp" || { "${SUDO[@]}" apt-get update -q >&2 && get_sources "$srcroot.tmp"; }
	for p in "${sources[@]}"; do
		find "$srcroot.tmp" -maxdepth 1 -name "${p}_*.dsc" -printf '%f\n' | sort -V | tail -n1
	done >"$srcroot.tmp/.complete"
	rm -rf "$srcroot" && mv "$srcroot.tmp" "$srcroot"
fi
flock -u 8

# dsc_of SOURCE: the .dsc of a source package in $srcroot.
dsc_of() {
	local f
	f=$(grep -E "^$1_[^_]+\.dsc\$" "$srcroot/.complete" || true)
	if [[ -z $f || ! -f $srcroot/$f ]]; then
		echo "build-openresty: no .dsc of $1 in $srcroot" >&2
		exit 1
	fi
	echo "$srcroot/$f"
}

# --- 4. the build, keyed by the .dsc files, nginx-deb and this script -------
key=""
for p in "${sources[@]}"; do
	d=$(dsc_of "$p")
	key+="dsc=$(basename "$d") dsc-sha256=$(sha256sum "$d" | cut -d' ' -f1) "
done
key+="nginx-deb=$(basename "$nginx_dir") build-openresty.sh-sha256=$(sha256sum "$self" | cut -d' ' -f1) arch=$(dpkg --print-architecture)"
hash=$(printf '%s' "$key" | sha256sum | cut -c1-8)
dir=$cache/openresty-deb-$hash
log=$dir/build.log

# --- package changes while building, undone at the end -----------------------
policy=/usr/sbin/policy-rc.d
leftovers=(/var/www/html/index.nginx-debian.html /var/www/html /var/www)
locked=""
policy_saved=""
left_before=()
declare -A added=() changed=() # package -> "" / the version it had before

installed_packages() {
	dpkg-query -W -f='${db:Status-Status} ${Package} ${Version}\n' 2>/dev/null |
		awk '$1 == "installed" {print $2, $3}' | sort
}

# deny_services: no package script starts a service (policy-rc.d exits 101);
# allow_services puts the old policy-rc.d back.
deny_services() {
	if [[ -z $policy_saved ]]; then
		policy_saved=$dir/.policy-rc.d.saved
		if [[ -e $policy ]]; then cp -p "$policy" "$policy_saved"; else : >"$policy_saved.none"; fi
	fi
	printf '#!/bin/sh\n# written by build-openresty.sh while it installs packages: no service starts\nexit 101\n' >"$policy.tmp"
	chmod 755 "$policy.tmp"
	mv "$policy.tmp" "$policy"
}
allow_services() {
	[[ -n $policy_saved ]] || return 0
	if [[ -e $policy_saved.none ]]; then
		rm -f "$policy" "$policy_saved.none"
	else
		mv "$policy_saved" "$policy"
	fi
	policy_saved=""
}

apt_get() {
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >>"$log" 2>&1
}

# apt_change ARG...: apt-get ARG... under the package lock (taken on first
# use, held until restore_packages) with services denied, remembering what
# it added and what it replaced or removed (only that: packages others
# install meanwhile are theirs).
apt_change() {
	local name ver
	if [[ -z $locked ]]; then
		exec 7>"$cache/.packages.lock"
		flock 7
		locked=1
		for name in "${leftovers[@]}"; do
			[[ -e $name ]] && left_before+=("$name")
		done
	fi
	declare -A pre=() post=()
	while read -r name ver; do pre[$name]=$ver; done < <(installed_packages)
	deny_services
	apt_get "$@"
	while read -r name ver; do post[$name]=$ver; done < <(installed_packages)
	for name in "${!post[@]}"; do
		[[ -n ${pre[$name]:-} ]] || added[$name]=1
	done
	for name in "${!pre[@]}"; do
		if [[ ${post[$name]:-} != "${pre[$name]}" && -z ${added[$name]:-} && -z ${changed[$name]:-} ]]; then
			changed[$name]=${pre[$name]}
		fi
	done
}

# install_debs FILE...: the package files, and what they need from the archive.
install_debs() {
	echo "build-openresty: installing $(printf '%s ' "${@##*/}")" >&2
	apt_change install --no-install-recommends "$@"
}

# restore_packages: what apt_change replaced or removed comes back from the
# archive (--purge: what that removes in turn is purged), then what it added
# and is still there is purged; then the lock is released.
restore_packages() {
	[[ -n $locked ]] || return 0
	local name ver back=() purge=()
	for name in "${!changed[@]}"; do
		back+=("$name=${changed[$name]}")
	done
	deny_services
	if ((${#back[@]})); then
		echo "build-openresty: putting back ${back[*]}" >&2
		apt_get install --no-install-recommends --purge --allow-downgrades "${back[@]}" ||
			echo "build-openresty: could not put back ${back[*]} (see $log)" >&2
	fi
	declare -A now=()
	while read -r name ver; do now[$name]=$ver; done < <(installed_packages)
	for name in "${!added[@]}"; do
		[[ -z ${now[$name]:-} ]] || purge+=("$name")
	done
	if ((${#purge[@]})); then
		echo "build-openresty: purging ${purge[*]}" >&2
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive dpkg --purge "${purge[@]}" >>"$log" 2>&1 ||
			echo "build-openresty: could not purge ${purge[*]} (see $log)" >&2
	fi
	allow_services
	for name in "${leftovers[@]}"; do
		[[ " ${left_before[*]} " == *" $name "* ]] || rm -d "$name" 2>/dev/null || true
	done
	added=() changed=() locked=""
	flock -u 7
}

# build_source SOURCE: dpkg-buildpackage -b of one source package in
# build/SOURCE, its packages moved into $dir.
build_source() {
	local src=$1 dsc tree start end v
	dsc=$(dsc_of "$src")
	tree=$dir/build/$src
	dpkg-source -x "$dsc" "$tree" >>"$log" 2>&1
	if ! (cd "$tree" && dpkg-checkbuilddeps) >>"$log" 2>&1; then
		echo "build-openresty: apt-get build-dep $(basename "$dsc")" >&2
		apt_change build-dep "$dsc"
	fi
	echo "build-openresty: dpkg-buildpackage $(basename "$dsc" .dsc) (log: $log)" >&2
	# The packages' own flags only (as in build-deb.sh): nothing from the
	# caller's environment that dpkg-buildflags or debhelper would add.
	local clean=(-u DEB_BUILD_PROFILES -u DEB_BUILD_MAINT_OPTIONS -u MAKEFLAGS)
	for v in $(compgen -e | grep -E '^DEB_[A-Z]+FLAGS(_MAINT)?_(SET|APPEND|PREPEND|STRIP)$' || true); do
		clean+=(-u "$v")
	done
	start=$(date +%s)
	(cd "$tree" && env "${clean[@]}" DEB_BUILD_OPTIONS=parallel=2 LC_ALL=C.UTF-8 dpkg-buildpackage -b -uc -us) >>"$log" 2>&1
	end=$(date +%s)
	mv -t "$dir" "$dir"/build/*.*deb "$dir"/build/*.changes "$dir"/build/*.buildinfo
	echo "$src: $(dpkg-parsechangelog -l "$tree/debian/changelog" -S Version) $((end - start)) s" >>"$dir/.versions"
	echo "build-openresty: $src built in $((end - start)) s" >&2
}

# deb NAME: the file of package NAME in $dir (or $2).
deb() {
	local f
	f=$(compgen -G "${2:-$dir}/$1_*.deb" | head -n1 || true)
	if [[ -z $f ]]; then
		echo "build-openresty: no package $1 in ${2:-$dir}" >&2
		exit 1
	fi
	echo "$f"
}

# signatures FILE...: the nginx module signatures ("8,4,8,0011...") in the
# ELF files packed in the .deb files, one a line, sorted and unique.
signatures() {
	local f
	for f in "$@"; do
		dpkg-deb --fsys-tarfile "$f" | tar -xO --wildcards './usr/sbin/nginx' './usr/lib/nginx/modules/*.so' 2>/dev/null |
			strings -a | grep -E '^[0-9]+,[0-9]+,[0-9]+,[01]{20,}$' || true
	done | sort -u
}

build() {
	local start end
	rm -rf "$dir"
	mkdir -p "$dir/build"
	: >"$log"
	# On any exit: the packages back as they were; on failure the log's tail.
	trap 'rc=$?; restore_packages; allow_services; if ((rc)); then echo "build-openresty: failed ($rc); last lines of $log:" >&2; tail -n 60 "$log" >&2; fi' EXIT
	start=$(date +%s)

	build_source luajit2
	# nginx-dev needs nginx and nginx-common of its version. One already
	# installed at that version (maybe by a test, from a build in another
	# cache: same version, other files) serves as well and stays as it is.
	local p nginx_debs=()
	for p in nginx nginx-common; do
		if [[ $(dpkg-query -W -f='${db:Status-Status} ${Version}' "$p" 2>/dev/null || true) != "installed $(dpkg-deb -f "$(deb "$p" "$nginx_dir")" Version)" ]]; then
			nginx_debs+=("$(deb "$p" "$nginx_dir")")
		fi
	done
	install_debs "${nginx_debs[@]}" "$(deb nginx-dev "$nginx_dir")" \
		"$(deb libluajit2-5.1-dev)" "$(deb libluajit2-5.1-2)" "$(deb libluajit2-5.1-common)"
	build_source libnginx-mod-http-ndk
	install_debs "$(deb libnginx-mod-http-ndk)" "$(deb libnginx-mod-http-ndk-dev)"
	build_source libnginx-mod-http-lua
	restore_packages
	end=$(date +%s)

	local f
	for f in libluajit2-5.1-2 libluajit2-5.1-2-dbgsym libnginx-mod-http-ndk libnginx-mod-http-ndk-dbgsym \
		libnginx-mod-http-lua libnginx-mod-http-lua-dbgsym; do
		compgen -G "$dir/${f}_*.*deb" >/dev/null || {
			echo "build-openresty: dpkg-buildpackage made no $f package" >&2
			exit 1
		}
	done
	# nginx loads a module only when its signature (nginx's configure
	# options) matches its own: "module ... is not binary compatible".
	local want got
	want=$(signatures "$(deb nginx "$nginx_dir")")
	got=$(signatures "$(deb libnginx-mod-http-ndk)" "$(deb libnginx-mod-http-lua)")
	if [[ -z $want || $got != "$want" ]]; then
		echo "build-openresty: module signature '$got' is not nginx's '$want'" >&2
		exit 1
	fi
	{
		echo "key: $key"
		sed 's/^/version: /' "$dir/.versions"
		echo "nginx-deb: $nginx_dir"
		echo "nginx-version: $(dpkg-deb -f "$(deb nginx "$nginx_dir")" Version)"
		echo "module-signature: $want"
		echo "build_seconds: $((end - start))"
		echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	} >"$dir/BUILD_INFO"
	rm -f "$dir/.versions"
	echo "build-openresty: built in $((end - start)) s; $(find "$dir" -maxdepth 1 -name '*deb' | wc -l) packages in $dir" >&2
	touch "$dir/.complete"
	trap - EXIT
}

exec 9>"$cache/.openresty-deb-$hash.lock"
flock 9
[[ -f $dir/.complete ]] || build
flock -u 9
echo "$dir" >&3
