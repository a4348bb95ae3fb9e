package symbols_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/symbols"
)

func TestSplitQualified(t *testing.T) {
	for _, c := range []struct{ in, mod, fn string }{
		{"libc.so.6:close", "libc.so.6", "close"},
		{"ngx_stream_module.so:ngx_stream_proxy_handler", "ngx_stream_module.so", "ngx_stream_proxy_handler"},
		{"/usr/lib/nginx/modules/ngx_mail_module.so:ngx_mail_init_connection", "/usr/lib/nginx/modules/ngx_mail_module.so", "ngx_mail_init_connection"},
		{"libluajit-5.1.so.2:lua_pcall", "libluajit-5.1.so.2", "lua_pcall"},
		{"ngx_unix_recv", "", "ngx_unix_recv"},
		{"ngx_recv.c:76", "", "ngx_recv.c:76"}, // a line, not a module
		{"nginx:main", "", "nginx:main"},       // not a shared object: no qualifier
		{"libc.so.6:", "", "libc.so.6:"},
	} {
		if mod, fn := symbols.SplitQualified(c.in); mod != c.mod || fn != c.fn {
			t.Errorf("SplitQualified(%q) = %q, %q; want %q, %q", c.in, mod, fn, c.mod, c.fn)
		}
	}
}

// An image opens a library only when a question needs it: a name of the
// executable reads none, a qualified name reads that one, and a name the
// executable lacks reads them all.
func TestImageOpensModulesLazily(t *testing.T) {
	nginxtest.RequireRoot(t)
	// Its own Binary: Close closes the image's modules, the executable
	// too, and openBinary's are shared by the package's tests.
	main, err := symbols.Open(nginxtest.Build(t, nginxtest.VariantO2).Binary, nil)
	if err != nil {
		t.Fatal(err)
	}
	libc, err := filepath.EvalSymlinks("/lib/x86_64-linux-gnu/libc.so.6")
	if err != nil {
		t.Fatal(err)
	}
	libz, err := filepath.EvalSymlinks("/lib/x86_64-linux-gnu/libz.so.1")
	if err != nil {
		t.Fatal(err)
	}
	var opened []string
	img := symbols.NewImage(main)
	img.Defer([]symbols.ModuleFile{
		{Path: libz, MappedPath: "/usr/lib/x86_64-linux-gnu/libz.so.1"},
		{Path: libc, MappedPath: "/usr/lib/x86_64-linux-gnu/libc.so.6"},
		{Path: "/nonexistent/ngx_gone_module.so", MappedPath: "/usr/lib/nginx/modules/ngx_gone_module.so"},
	}, func(f symbols.ModuleFile) (*symbols.Binary, error) {
		opened = append(opened, filepath.Base(f.MappedPath))
		return symbols.Open(f.Path, nil)
	})
	defer img.Close()

	fns, err := img.Lookup("ngx_http_finalize_request")
	if err != nil || len(fns) != 1 || fns[0].Binary() != main || len(opened) != 0 {
		t.Fatalf("Lookup of nginx's function: %v, %v; opened %v, want none", fns, err, opened)
	}
	fns, err = img.Lookup("libc.so.6:close")
	if err != nil || len(fns) == 0 || symbols.ModuleName(fns[0].Binary()) != "libc.so.6" || strings.Join(opened, ",") != "libc.so.6" {
		t.Fatalf("Lookup(libc.so.6:close): %v, %v; opened %v, want libc only", fns, err, opened)
	}
	if _, err := img.Module("libssl.so.3"); !errors.Is(err, symbols.ErrModuleNotFound) {
		t.Errorf("Module(libssl.so.3) = %v, want ErrModuleNotFound", err)
	}
	// deflate is libz's: the executable has none, so every module is read,
	// and the one that can't be is reported.
	fns, err = img.Lookup("deflate")
	if err != nil || len(fns) == 0 || symbols.ModuleName(fns[0].Binary()) != "libz.so.1" {
		t.Fatalf("Lookup(deflate): %v, %v", fns, err)
	}
	if len(img.Unopened()) != 0 || len(img.Failed()) != 1 || !strings.Contains(img.Failed()[0].Error(), "ngx_gone_module.so") {
		t.Errorf("after a lookup of everything: unopened %v, failed %v", img.Unopened(), img.Failed())
	}
	_, err = img.Lookup("ngx_http_finalize_requst")
	var nf *symbols.NotFoundError
	if !errors.As(err, &nf) || !strings.Contains(err.Error(), "ngx_http_finalize_request") || strings.Contains(strings.Join(nf.Closest, " "), "__") {
		t.Errorf("a misspelt name: %v; want nginx's closest names, not libc's", err)
	}
	// Functions of one module, by qualified pattern.
	fns, err = img.Functions("libz.so.1:inflateEnd")
	if err != nil || len(fns) != 1 || fns[0].Name != "inflateEnd" {
		t.Errorf("Functions(libz.so.1:inflateEnd) = %v, %v", fns, err)
	}
	if typ, in, err := img.Type("ngx_connection_t"); err != nil || typ == nil || in != main {
		t.Errorf("Type(ngx_connection_t) = %v in %v, %v; want the executable's", typ, in, err)
	}
}

// A misspelt field names the closest fields, not all of a struct's
// hundred: the full list is one command away.
func TestNotFoundErrorIsShort(t *testing.T) {
	many := make([]string, 143)
	for i := range many {
		many[i] = fmt.Sprintf("field%d", i)
	}
	long := (&symbols.NotFoundError{Kind: symbols.ErrFieldNotFound, Name: "conection", Where: "ngx_http_request_t", Closest: []string{"connection"}, All: many}).Error()
	if want := `field not found: "conection" in ngx_http_request_t; did you mean connection? (ngxprobe fields 'ngx_http_request_t' lists its 143 fields)`; long != want {
		t.Errorf("long list:\n got %s\nwant %s", long, want)
	}
	short := (&symbols.NotFoundError{Kind: symbols.ErrNoParam, Name: "rr", Where: "f", Closest: []string{"r"}, All: []string{"r", "rc"}}).Error()
	if !strings.HasSuffix(short, "(parameters: r, rc)") {
		t.Errorf("a short list is listed: %s", short)
	}
}
