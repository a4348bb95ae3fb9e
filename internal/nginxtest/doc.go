// Package nginxtest builds and runs a real nginx for ngxprobe's tests.
//
// The nginx is Debian's 1.22.1 source (fetched with `apt-get source nginx`),
// configured with nginx's own ./configure and built by build-nginx.sh in two
// variants, neither with frame pointers and both with full DWARF debug info:
//
//	"o2"   -g -O2 -fomit-frame-pointer
//	"lto"  -g -O2 -fomit-frame-pointer -flto=2 (static functions may get
//	       ".lto_priv.N" suffixes, e.g. ngx_http_ssl_handshake.lto_priv.0)
//
// Builds are cached under ${NGXPROBE_CACHE:-/var/cache/ngxprobe}, one folder
// per (nginx version, variant flags); setup-deps.sh installs the Debian
// packages the tests need (compiler, libs, pahole, gdb, curl, wrk, binutils).
//
// A typical test:
//
//	nginxtest.RequireRoot(t)
//	inst := nginxtest.Build(t, "o2")
//	port := nginxtest.FreePort(t)
//	srv := nginxtest.Start(t, inst, nginxtest.Config{HTTP: fmt.Sprintf(
//		"server { listen 127.0.0.1:%d; location / { return 200 ok; } }", port)})
//	pids := srv.WorkerPIDs()
//
// The nginx people actually run is Debian's packages: build-deb.sh builds the
// same source package with its own debian/rules (dpkg-buildpackage -b), so
// /usr/sbin/nginx comes out stripped (only a build-id and a .gnu_debuglink),
// its DWARF in nginx-dbgsym under /usr/lib/debug/.build-id (after dh_dwz:
// DW_TAG_partial_unit within the file, no .gnu_debugaltlink), and stream,
// mail and the other modules are .so files in libnginx-mod-* packages:
//
//	b := nginxtest.BuildDeb(t)                  // cached: $NGXPROBE_CACHE/nginx-deb-<hash8>
//	nginxtest.InstallDebs(t, b, "nginx", "libnginx-mod-stream", "nginx-dbgsym")
//	srv := nginxtest.StartPackaged(t, nginxtest.Config{
//		Modules: []string{"ngx_stream_module"},
//		Stream:  fmt.Sprintf("server { listen 127.0.0.1:%d; proxy_pass %s; }", port, backend)})
//	id, _ := nginxtest.BuildID(nginxtest.PackagedBinary)
//	d := nginxtest.StartDebuginfod(t, b.Dir)    // d.URL serves /buildid/<id>/debuginfo
//	nginxtest.RemoveDebs(t, "nginx-dbgsym")     // no local debug info; put back by t.Cleanup
//
// InstallDebs starts no service and purges what it installed in t.Cleanup.
// setup-deps.sh deb installs what these need (debhelper, dwz, the package's
// Build-Depends, debuginfod, bsdtar).
//
// Everything a server writes (nginx.conf, pid file, logs, temp files) stays in
// the test's t.TempDir(); the server is stopped by t.Cleanup. Tests that need
// root or the build skip when they can't run, except when CI=true, where they
// fail instead.
package nginxtest
