package nginxtest

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpenRestyLuaConfig(t *testing.T) {
	got := LuaConfig(Config{Modules: []string{"ngx_stream_module"}, HTTP: "server {}"}).render("/d")
	for _, want := range []string{
		`load_module "/usr/lib/nginx/modules/ndk_http_module.so";
load_module "/usr/lib/nginx/modules/ngx_http_lua_module.so";
load_module "/usr/lib/nginx/modules/ngx_stream_module.so";`,
		`    lua_package_path "/usr/share/lua/5.1/?.lua;;";
server {}`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("nginx.conf lacks\n%s\nin\n%s", want, got)
		}
	}
}

// TestOpenRestyPackaged checks the OpenResty target: Debian's luajit2,
// ngx_devel_kit and lua-nginx-module packages, built against the packaged
// nginx, load into it and run Lua on OpenResty's LuaJIT; each library is
// stripped with its DWARF in a -dbgsym package. Everything it installs is
// purged at the end, and what the install removed (the archive's upstream
// LuaJIT) is back.
func TestOpenRestyPackaged(t *testing.T) {
	RequireRoot(t)
	b := BuildOpenResty(t)
	t.Logf("OpenResty against nginx %s (module signature %s): %s", b.Nginx.Version, b.ModuleSignature, strings.Join(b.Names(), " "))
	for _, name := range append(OpenRestyPackages, "libluajit2-5.1-dev", "libluajit2-5.1-common", "luajit2", "luajit2-dbgsym", "libnginx-mod-http-ndk-dev") {
		b.Deb(t, name)
	}

	watched := append([]string{"nginx-common", "lua-resty-core", "lua-resty-lrucache", "libluajit2-5.1-common",
		"libluajit-5.1-2", "libluajit-5.1-common"}, OpenRestyPackages...)
	before := installedVersions(watched)
	t.Run("installed", func(t *testing.T) {
		InstallOpenResty(t, b)
		all := b.Packages()
		for _, name := range OpenRestyPackages {
			if !all.installedFrom(name) {
				t.Fatalf("%s is not installed from %s (installed version %q)", name, all.Debs[name], installedVersion(name))
			}
		}
		t.Logf("from the archive: lua-resty-core %s, lua-resty-lrucache %s", installedVersion("lua-resty-core"), installedVersion("lua-resty-lrucache"))
		lib, err := LuaJITLibrary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(LuaSharedDir, "resty", "core.lua")); err != nil {
			t.Fatal(err)
		}
		libs := []struct{ path, pkg string }{
			{lib, "libluajit2-5.1-2-dbgsym"},
			{modulePath(NDKModule), "libnginx-mod-http-ndk-dbgsym"},
			{modulePath(LuaModule), "libnginx-mod-http-lua-dbgsym"},
		}

		t.Run("dbgsym", func(t *testing.T) {
			for _, l := range libs {
				id := checkStripped(t, l.path)
				debug := DebugFileByBuildID(id)
				got, err := BuildID(debug)
				owner, info := dpkgOwner(debug), hasSection(debug, ".debug_info")
				if err != nil || got != id || owner != l.pkg || !info {
					t.Errorf("%s: build-id %q (%v), package %q, .debug_info %v; want %s, %s, true", debug, got, err, owner, info, id, l.pkg)
				}
				t.Logf("%s (%s): %s", debug, l.pkg, dwzReport(t, debug))
			}
		})

		t.Run("lua", func(t *testing.T) {
			dir := t.TempDir()
			script := filepath.Join(dir, "traceback.lua")
			if err := os.WriteFile(script, []byte(luaTraceback), 0o644); err != nil {
				t.Fatal(err)
			}
			port := FreePort(t)
			srv := StartPackaged(t, LuaConfig(Config{HTTP: fmt.Sprintf(`server {
        listen 127.0.0.1:%d;
        location = /version {
            content_by_lua_block { ngx.say(jit.version, " ", ngx.config.ngx_lua_version, " ", ngx.config.nginx_version) }
        }
        location = /fork {
            content_by_lua_block {
                local isarray = require "table.isarray"
                ngx.say(isarray({1, 2, 3}), " ", isarray({a = 1}), " ", package.loaded["resty.core"] ~= nil)
            }
        }
        location = /traceback {
            content_by_lua_block {%s}
        }
        location = /traceback-file {
            content_by_lua_file %q;
        }
        location = /close {
            access_by_lua_block { ngx.exit(444) }
            content_by_lua_block { ngx.say("not closed") }
        }
    }`, port, luaTraceback, script)}))
			base := fmt.Sprintf("http://127.0.0.1:%d", port)

			worker := srv.WorkerPIDs()[0]
			maps := readFile(fmt.Sprintf("/proc/%d/maps", worker))
			real, err := filepath.EvalSymlinks(lib)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{real, modulePath(NDKModule), modulePath(LuaModule)} {
				if !strings.Contains(maps, want) {
					t.Errorf("worker %d has not mapped %s", worker, want)
				}
			}

			// OpenResty's fork says the same as upstream LuaJIT 2.1.0-beta3
			// (luajit.h LUAJIT_VERSION); its extensions tell them apart.
			if got := httpGet(t, base+"/version"); !strings.HasPrefix(got, "LuaJIT 2.1.0-beta3 10023 1022001\n") {
				t.Errorf("/version: %q, want LuaJIT 2.1.0-beta3, lua-nginx-module 0.10.23, nginx 1.22.1", got)
			}
			if got := httpGet(t, base+"/fork"); got != "true false true\n" {
				t.Errorf("/fork: %q, want table.isarray (OpenResty's LuaJIT) and resty.core loaded", got)
			}
			// The chunk name of an inline block is its directive and
			// where it stands in nginx.conf; its lines count from the
			// one of the "{" (line 1). A file's is its path, which a
			// traceback cuts to its last 56 bytes ("..." first).
			conf := strings.Split(readFile(filepath.Join(srv.Dir(), "nginx.conf")), "\n")
			line := 0
			for i, l := range conf {
				if strings.Contains(l, "location = /traceback {") {
					line = i + 2
				}
			}
			chunk := fmt.Sprintf("content_by_lua(nginx.conf:%d)", line)
			for _, c := range []struct{ path, chunk string }{{"/traceback", chunk}, {"/traceback-file", luaSource(script)}} {
				tb := httpGet(t, base+c.path)
				t.Logf("debug.traceback() in %s:\n%s", c.path, tb)
				want := fmt.Sprintf("tb\nstack traceback:\n\t%[1]s:3: in function 'inner'\n\t%[1]s:6: in main chunk\n", c.chunk)
				if tb != want {
					t.Errorf("%s: traceback\n%s\nwant\n%s", c.path, tb, want)
				}
			}

			// ngx.exit(444) in the access phase: closed, nothing sent.
			if got, err := exchange(fmt.Sprintf("127.0.0.1:%d", port), "GET /close HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil || got != "" {
				t.Errorf("/close: read %q, %v; want the connection closed with no response", got, err)
			}
			if !waitFor(5*time.Second, func() bool { return strings.Contains(srv.AccessLog(), ` 444 0 `) }) {
				t.Errorf("no 444 in the access log:\n%s", srv.AccessLog())
			}
		})
	})

	// The cleanups left the packages as they were.
	if after := installedVersions(watched); !maps.Equal(after, before) {
		t.Errorf("installed versions after the test:\n%v\nbefore:\n%v", after, before)
	}
}

// exchange sends req on a new TCP connection to addr and returns what it
// reads until the server closes the connection (5 s at most).
func exchange(addr, req string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	_, err = io.WriteString(c, req)
	got, rerr := io.ReadAll(c)
	return string(got), errors.Join(err, rerr)
}

// installedVersions maps each of names to its installed version ("" when
// it is not installed).
func installedVersions(names []string) map[string]string {
	m := map[string]string{}
	for _, n := range names {
		m[n] = installedVersion(n)
	}
	return m
}

// hasSection reports whether the ELF file path has the section name.
func hasSection(path, name string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return f.Section(name) != nil
}

// luaTraceback is Lua whose debug.traceback() has two frames: the function
// inner at line 3, called from the main chunk at line 6 (not a tail call,
// which would leave no frame of inner).
const luaTraceback = `
    local function inner()
        local tb = debug.traceback("tb")
        return tb
    end
    ngx.say(inner())
`

// luaSource is how LuaJIT's tracebacks and error messages show the chunk
// "@"+path (lj_debug_shortname, LUA_IDSIZE 60): the path, or from 60 bytes
// on "..." and its last 56.
func luaSource(path string) string {
	if len(path) >= 60 {
		return "..." + path[len(path)-56:]
	}
	return path
}

// httpGet returns the body of a 200 answer to GET url.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	return string(body)
}
