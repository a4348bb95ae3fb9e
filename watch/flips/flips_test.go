package flips

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/symbols"
	"github.com/ngxprobe/ngxprobe/watch"
)

func TestParseExpr(t *testing.T) {
	for _, tc := range []struct {
		text        string
		event, name string
		bad         bool
	}{
		{text: "c->read->eof", event: "read", name: "eof"},
		{text: " c->write->timedout ", event: "write", name: "timedout"},
		{text: "c->destroyed", name: "destroyed"},
		{text: "r->connection->read->eof", bad: true},
		{text: "c->log->connection", bad: true},
		{text: "c->read.eof", bad: true},
		{text: "c->", bad: true},
	} {
		x, err := ParseExpr(tc.text)
		if tc.bad {
			if !errors.Is(err, ErrUnsupportedExpr) {
				t.Errorf("ParseExpr(%q) = %+v, %v; want ErrUnsupportedExpr", tc.text, x, err)
			}
			continue
		}
		if err != nil || x.Event != tc.event || x.Field != tc.name {
			t.Errorf("ParseExpr(%q) = %+v, %v; want event %q field %q", tc.text, x, err, tc.event, tc.name)
		}
	}
}

// TestDecodeRole: a connection with a listening socket is a client's; the
// role value is a pointer (symbols.Pointer), not its text.
func TestDecodeRole(t *testing.T) {
	pr := &probes.Probe{Name: "diff ngx_unix_recv"}
	p := &Program{Expr: Expr{Text: "c->read->eof"}, Points: []string{"ngx_unix_recv", "ngx_unix_recv%return"}, spans: []bool{true, false}, exact: map[*probes.Probe]bool{}}
	event := func(listening symbols.Pointer) probes.Event {
		return probes.Event{Probe: pr, Values: []probes.Value{
			{Expr: "site", Readable: true, JSON: uint64(1)},
			{Expr: "old", Readable: true, JSON: uint64(0)},
			{Expr: "new", Readable: true, JSON: uint64(1)},
			{Expr: "prev", Readable: true, JSON: uint64(0)},
			{Expr: "conn", Readable: true, JSON: uint64(7)},
			{Expr: "role", Readable: true, Text: listening.String(), JSON: listening},
			{Expr: "logged_as", Readable: true, JSON: uint64(5)},
			{Expr: "addr", Readable: true, JSON: "10.0.0.1"},
			{Expr: "client", Readable: true, JSON: "192.0.2.1"},
		}}
	}
	f := p.Decode(event(0x55d0a3c4e010))
	want := Flip{Mode: "diff", Field: "c->read->eof", Old: 0, New: 1, Conn: 7, Role: "client", LoggedAs: 5, Client: "10.0.0.1", Function: "ngx_unix_recv", From: "ngx_unix_recv", To: "ngx_unix_recv%return"}
	if f != want {
		t.Errorf("client: got %+v\nwant %+v", f, want)
	}
	f = p.Decode(event(0))
	want.Role, want.Client = "upstream", "192.0.2.1"
	if f != want {
		t.Errorf("upstream: got %+v\nwant %+v", f, want)
	}
}

func TestWideStore(t *testing.T) {
	s := watch.Site{Size: 8, Hint: watch.HintNone, Field: watch.FieldRef{Type: "ngx_event_t"}}
	if why := wideStore(s, false); !strings.Contains(why, "Options.AllSites") {
		t.Errorf("8-byte store: %q, want a reason naming Options.AllSites", why)
	}
	if why := wideStore(s, true); why != "" {
		t.Errorf("read-modify-write: %q, want none", why)
	}
	s.Size = 2
	if why := wideStore(s, false); why != "" {
		t.Errorf("2-byte store: %q, want none", why)
	}
}

func TestWriterLine(t *testing.T) {
	src := []byte("a\n    rev->ready = 0;\n    rev->eof = 1;\n")
	read := func(path string) ([]byte, error) {
		if path != "/build/src/x.c" {
			return nil, os.ErrNotExist
		}
		return src, nil
	}
	s := watch.Site{File: "src/x.c", Line: 2, Lines: []int{2, 3}}
	if got := writerLine(s, "eof", "/build", read); got != 3 {
		t.Errorf("eof: line %d, want 3", got)
	}
	if got := writerLine(s, "ready", "/build", read); got != 2 {
		t.Errorf("ready: line %d, want 2", got)
	}
	if got := writerLine(s, "eof", "/elsewhere", read); got != 2 {
		t.Errorf("no source: line %d, want the site's line 2", got)
	}
}
