package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// ngx runs a command line as main does and returns stdout, stderr and the
// exit status.
func ngx(args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	code := execute(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// Every command's --help exits 0 and lists each of its flags on a line of
// its own; the top-level help lists every command.
func TestHelp(t *testing.T) {
	for _, name := range commandOrder {
		for _, h := range []string{"--help", "-h"} {
			out, errOut, code := ngx(name, h)
			if code != 0 || errOut != "" || !strings.HasPrefix(out, "usage: ngxprobe "+name) {
				t.Errorf("%s %s: exit %d, stderr %q, stdout:\n%s", name, h, code, errOut, out)
			}
			for _, f := range commandFlags(name) {
				found := false
				for _, line := range strings.Split(out, "\n") {
					if strings.HasPrefix(strings.TrimSpace(line), f+" ") || strings.TrimSpace(line) == f {
						found = true
					}
				}
				if !found {
					t.Errorf("%s --help does not list %s on a line of its own:\n%s", name, f, out)
				}
			}
		}
	}
	for _, f := range []string{"--stack", "--stack-bytes", "--probe", "-e"} {
		if !strings.Contains(strings.Join(commandFlags("run"), " "), f) {
			t.Errorf("run has no %s", f)
		}
	}
	for _, f := range []string{"--at", "--all-sites", "--attach", "--explain"} {
		if !strings.Contains(strings.Join(commandFlags("watch"), " "), f) {
			t.Errorf("watch has no %s", f)
		}
	}
	out, _, code := ngx("--help")
	for _, name := range commandOrder {
		if code != 0 || !strings.Contains(out, "ngxprobe "+name) {
			t.Errorf("--help: exit %d, no %s in:\n%s", code, name, out)
		}
	}
	if out, _, code := ngx("help", "watch"); code != 0 || !strings.HasPrefix(out, "usage: ngxprobe watch") {
		t.Errorf("help watch: exit %d:\n%s", code, out)
	}
}

// A usage error exits 2 and says what was wrong, with the closest command.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"rnu"}, `unknown command "rnu"; did you mean run?`},
		{nil, "no command"},
		{[]string{"run", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"run", "-p", "1", "--binary", "/x"}, "give -p or --binary, not both"},
		{[]string{"watch", "--binary", "/x", "--attach", "fast", "c->read->eof"}, `--attach "fast"`},
		{[]string{"completion", "fish"}, "completion needs bash or zsh"},
		{[]string{"version", "x"}, "version takes no arguments"},
	} {
		_, errOut, code := ngx(c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "usage:") {
			t.Errorf("%q: exit %d, want 2 and %q with the usage:\n%s", c.args, code, c.want, errOut)
		}
	}
}

func TestVersion(t *testing.T) {
	out, _, code := ngx("version")
	if code != 0 || !strings.HasPrefix(out, "ngxprobe ") || !strings.Contains(out, "go1.") {
		t.Errorf("version: exit %d: %q", code, out)
	}
}

// The completion scripts are valid bash, and know every command.
func TestCompletionScript(t *testing.T) {
	for _, shell := range []string{"bash", "zsh"} {
		out, _, code := ngx("completion", shell)
		if code != 0 || !strings.Contains(out, "complete -F _ngxprobe ngxprobe") {
			t.Fatalf("completion %s: exit %d:\n%s", shell, code, out)
		}
		for _, name := range commandOrder {
			if !strings.Contains(out, name) {
				t.Errorf("completion %s does not know %s", shell, name)
			}
		}
		if shell == "bash" {
			cmd := exec.Command("bash", "-n")
			cmd.Stdin = strings.NewReader(out)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("bash -n: %v\n%s", err, b)
			}
		}
	}
}

// funcs with no match exits 1 and names the closest functions; a binary
// that is not nginx is said to be so.
func TestFuncsNoMatch(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	_, errOut, code := ngx("funcs", "--binary", inst.Binary, "ngx_http_finalize_requst")
	if code != 1 || !strings.Contains(errOut, `no function matches "ngx_http_finalize_requst"`) || !strings.Contains(errOut, "did you mean ngx_http_finalize_request") {
		t.Errorf("funcs with no match: exit %d, want 1 with the closest name:\n%s", code, errOut)
	}
	_, errOut, code = ngx("funcs", "--binary", "/bin/ls", "ngx_http")
	if code != 1 || !strings.Contains(errOut, "not nginx") || strings.Contains(errOut, "-g") {
		t.Errorf("funcs on /bin/ls: exit %d, want 1 saying it is not nginx, without nginx's debug-info advice:\n%s", code, errOut)
	}
	out, _, code := ngx("funcs", "--names", "--binary", inst.Binary, "ngx_http_finalize")
	if code != 0 || !strings.Contains(out, "ngx_http_finalize_request\n") || strings.Contains(out, "\t") {
		t.Errorf("funcs --names: exit %d:\n%s", code, out)
	}
}
