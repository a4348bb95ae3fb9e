package probeset

import (
	"strings"
	"testing"
)

func TestParseFlag(t *testing.T) {
	s, err := ParseFlag("ngx_unix_recv%return: $retval , c->read->eof,stack")
	if err != nil {
		t.Fatal(err)
	}
	if s.Function != "ngx_unix_recv" || !s.Return || !s.Stack || len(s.Values) != 2 || s.Values[0].Expr != "$retval" {
		t.Fatalf("parsed %+v", s)
	}
	if s.Name() != "ngx_unix_recv%return" {
		t.Errorf("name %q", s.Name())
	}
	for _, bad := range []string{"", ":r->x", "f(x)", "two words"} {
		if _, err := ParseFlag(bad); err == nil || !strings.Contains(err.Error(), "FUNCTION") {
			t.Errorf("ParseFlag(%q) = %v, want a usage error", bad, err)
		}
	}
}

// The default set reads what issue #2 promises at each point.
func TestDefaultSet(t *testing.T) {
	want := map[string][]string{
		"ngx_http_finalize_request": {"rc", "r->headers_out.status", "r->connection->addr_text", "r->request_line", "r->connection->read->eof", "r->connection->write->timedout", "r->connection->error", "r->upstream->peer.connection->number"},
		"ngx_unix_recv%return":      {"$retval", "size", "c->number", "c->read->eof", "c->read->error"},
		"ngx_http_ssl_handshake":    {"((ngx_connection_t *) rev->data)->number", "rev->eof"},
	}
	got := map[string]map[string]bool{}
	for _, s := range Default() {
		got[s.Name()] = map[string]bool{}
		for _, v := range s.Values {
			got[s.Name()][v.Expr] = true
		}
	}
	for probe, exprs := range want {
		for _, e := range exprs {
			if !got[probe][e] {
				t.Errorf("default set: %s does not read %s", probe, e)
			}
		}
	}
}
