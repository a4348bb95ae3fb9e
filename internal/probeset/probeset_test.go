package probeset

import (
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/script"
)

func TestFromFlag(t *testing.T) {
	for _, tc := range []struct{ flag, want string }{
		{"ngx_unix_recv%return: $retval , c->read->eof,stack", "ngx_unix_recv%return { print($retval, c->read->eof); stack }\n"},
		{"ngx_http_finalize_request", "ngx_http_finalize_request {  }\n"},
		{"ngx_writev:stack", "ngx_writev { stack }\n"},
		{"f:((ngx_connection_t *) rev->data)->number", "f { print(((ngx_connection_t *) rev->data)->number) }\n"},
	} {
		got, err := FromFlag(tc.flag)
		if err != nil || got != tc.want {
			t.Errorf("FromFlag(%q) = %q, %v; want %q", tc.flag, got, err, tc.want)
		}
		if _, err := script.ParseText("--probe", got, nil); err != nil {
			t.Errorf("FromFlag(%q) does not parse: %v", tc.flag, err)
		}
	}
	for _, bad := range []string{"", ":r->x", "f(x)", "two words", "f{", "%return"} {
		if _, err := FromFlag(bad); err == nil || !strings.Contains(err.Error(), "FUNCTION") {
			t.Errorf("FromFlag(%q) = %v, want a usage error", bad, err)
		}
	}
}

// values lists, per probe point, each printed value as label/name=expr.
func values(t *testing.T, name, text string) map[string][]string {
	t.Helper()
	s, err := script.ParseText(name, text, nil)
	if err != nil {
		t.Fatalf("%s does not parse: %v", name, err)
	}
	out := map[string][]string{}
	for _, p := range s.Probes {
		for _, pt := range p.Points {
			for _, st := range p.Body {
				if pr, ok := st.(*script.Print); ok {
					for _, a := range pr.Args {
						out[pt.Text] = append(out[pt.Text], pr.Label+"/"+a.Name+"="+a.Text)
					}
				}
			}
		}
	}
	return out
}

// The default set reads what issue #2 promises at each point, named and
// grouped as its output has always shown them.
func TestDefaultSet(t *testing.T) {
	want := map[string][]string{
		"ngx_http_finalize_request": {"request/rc=rc", "request/status=r->headers_out.status", "request/client=r->connection->addr_text", "request/request=r->request_line",
			"client/conn=r->connection->number", "client/role=r->connection->listening", "client read/eof=r->connection->read->eof",
			"client write/timedout=r->connection->write->timedout", "client conn/error=r->connection->error",
			"upstream/conn=r->upstream->peer.connection->number", "upstream read/eof=r->upstream->peer.connection->read->eof"},
		"ngx_unix_recv%return":   {"recv/ret=$retval", "recv/size=size", "recv/conn=c->number", "recv/log=c->log->connection", "recv/role=c->listening", "read/eof=c->read->eof", "read/error=c->read->error"},
		"ngx_http_ssl_handshake": {"handshake/conn=((ngx_connection_t *) rev->data)->number", "handshake/client=((ngx_connection_t *) rev->data)->addr_text", "read/eof=rev->eof", "read/error=rev->error"},
	}
	got := values(t, DefaultName, Default)
	if len(got) != len(want) {
		t.Errorf("default set probes %d points, want %d: %v", len(got), len(want), got)
	}
	for point, vs := range want {
		have := strings.Join(got[point], " ")
		for _, v := range vs {
			if !strings.Contains(" "+have+" ", " "+v+" ") {
				t.Errorf("default set: %s does not read %s; it reads %s", point, v, have)
			}
		}
	}
}

func TestCloseStacks(t *testing.T) {
	text := CloseStacks(func(fn string) bool { return fn == "ngx_close_connection" })
	got := values(t, "close", text)
	if len(got) != 1 || len(got["ngx_close_connection"]) != 10 {
		t.Fatalf("close stacks for ngx_close_connection only: %v", got)
	}
	if !strings.Contains(text, "stack") {
		t.Errorf("close stacks without stack:\n%s", text)
	}
	if CloseStacks(func(string) bool { return false }) != "" {
		t.Errorf("close stacks for a binary without the functions is not empty")
	}
}
