package script_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/script"
)

// noInclude is a ReadFunc for scripts that must not read files.
func noInclude(path string) ([]byte, error) {
	return nil, fmt.Errorf("open %s: %w", path, fs.ErrNotExist)
}

// memFS is a ReadFunc over in-memory files, counting reads.
type memFS struct {
	files map[string]string
	reads map[string]int
}

func newMemFS(files map[string]string) *memFS {
	return &memFS{files: files, reads: map[string]int{}}
}

func (m *memFS) read(path string) ([]byte, error) {
	m.reads[path]++
	src, ok := m.files[path]
	if !ok {
		return nil, fmt.Errorf("open %s: %w", path, fs.ErrNotExist)
	}
	return []byte(src), nil
}

func mustParse(t *testing.T, src string) *script.Script {
	t.Helper()
	s, err := script.ParseText("t.ngxp", src, noInclude)
	if err != nil {
		t.Fatalf("parse:\n%s\nerror:\n%v", src, err)
	}
	return s
}

func TestParseForms(t *testing.T) {
	cases := []struct {
		name, src, want string
	}{
		{"entry", `ngx_http_finalize_request { print(rc) }`, `
probe entry ngx_http_finalize_request
  print(rc)`},
		{"return", `ngx_unix_recv%return { print($retval) }`, `
probe return ngx_unix_recv
  print($retval)`},
		{"offset hex", `ngx_unix_recv+0x4 { }`, `
probe offset ngx_unix_recv+0x4`},
		{"offset decimal and octal", `f+12 {} g+010 {}`, `
probe offset f+0xc
probe offset g+0x8`},
		{"line", `src/os/unix/ngx_recv.c:60 { print(size) }`, `
probe line src/os/unix/ngx_recv.c:60
  print(size)`},
		{"line with a base name", `ngx_recv.c:7{}`, `
probe line ngx_recv.c:7`},
		{"clone suffix", `ngx_http_ssl_handshake.lto_priv.0 {}`, `
probe entry ngx_http_ssl_handshake.lto_priv.0`},
		{"several points", "ngx_http_finalize_request, ngx_http_terminate_request,\n  ngx_unix_recv%return, x.c:3 {}", `
probe entry ngx_http_finalize_request, entry ngx_http_terminate_request, return ngx_unix_recv, line x.c:3`},
		{"empty body", `f{}`, `
probe entry f`},
		{"filter", `f / rc == 499 || conn->read->eof / { }`, `
probe entry f
  filter (|| (== rc 499) (-> (-> conn read) eof))`},
		{"filter without spaces", `f /rc!=0/ {}`, `
probe entry f
  filter (!= rc 0)`},
		{"precedence", `f / a || b && !c / {}`, `
probe entry f
  filter (|| a (&& b (! c)))`},
		{"left associative", `f / a && b && c || d || e / {}`, `
probe entry f
  filter (|| (|| (&& (&& a b) c) d) e)`},
		{"parentheses", `f / !(a || b) && (c) / {}`, `
probe entry f
  filter (&& (! (|| a b)) c)`},
		{"comparisons", `f / a == 1 && b != 2 && c < 3 && d <= 4 && e > 5 && g >= 6 / {}`, `
probe entry f
  filter (&& (&& (&& (&& (&& (== a 1) (!= b 2)) (< c 3)) (<= d 4)) (> e 5)) (>= g 6))`},
		{"literals", `f / a == 0x1F || a == 017 || a == -1 || a == 'G' || a == '\n' || a == '\x41' || a == 10UL / {}`, `
probe entry f
  filter (|| (|| (|| (|| (|| (|| (== a 31) (== a 15)) (== a -1)) (== a 71)) (== a 10)) (== a 65)) (== a 10))`},
		{"large numbers", `f / a == 0xffffffffffffffff || a == -9223372036854775808 / {}`, `
probe entry f
  filter (|| (== a -1) (== a -9223372036854775808))`},
		{"string literal", `f / c->addr_text == "127.0.0.1" && r->method_name != "G\"E\\T\t\x41" / {}`, `
probe entry f
  filter (&& (== (-> c addr_text) "127.0.0.1") (!= (-> r method_name) "G\"E\\T\tA"))`},
		{"literal on the left", `f / 499 == rc / {}`, `
probe entry f
  filter (== 499 rc)`},
		{"members and index", `f { print(r->headers_out.status, a[3].b[0]->c) }`, `
probe entry f
  print((. (-> r headers_out) status), (-> ([] (. ([] a 3) b) 0) c))`},
		{"casts", `f { print(((ngx_connection_t *) rev->data)->number, (struct ngx_event_s **) p, (unsigned long) n, (size_t) -1, (foo *) x) }`, `
probe entry f
  print((-> (cast "ngx_connection_t *" (-> rev data)) number), (cast "struct ngx_event_s **" p), (cast "unsigned long " n), (cast "size_t " -1), (cast "foo *" x))`},
		{"parenthesized name is no cast", `f { print((r)->uri) }`, `
probe entry f
  print((-> r uri))`},
		{"print names", `f { print(rc, status = r->headers_out.status, c->number) }`, `
probe entry f
  print(rc, status=(. (-> r headers_out) status), (-> c number))`},
		{"print nothing", `f { print() }`, `
probe entry f
  print()`},
		{"printf", `f { printf("conn *%d eof=%d\n", c->number, c->read->eof) printf("hit\n") }`, `
probe entry f
  printf("conn *%d eof=%d\n", (-> c number), (-> (-> c read) eof))
  printf("hit\n")`},
		{"stack forms", `f { stack; stack(); ustack }`, `
probe entry f
  stack
  stack
  stack`},
		{"aggregations", `f {
	@fin[probe, r->headers_out.status] = count()
	@bytes[c->number] = sum($retval)
	@lo = min(n); @hi = max(n); @mean = avg(n)
	@ = count()
}`, `
probe entry f
  @fin[probe, (. (-> r headers_out) status)] = count()
  @bytes[(-> c number)] = sum($retval)
  @lo = min(n)
  @hi = max(n)
  @mean = avg(n)
  @ = count()`},
		{"locals", `f { c = r->connection; print(c->number) c2 = c }`, `
probe entry f
  let c = (-> r connection)
  print((-> c number))
  let c2 = c`},
		{"define", "define conn = r->connection\ndefine eof = conn->read->eof;\nf / eof / {}", `
define conn = (-> r connection)
define eof = (-> (-> conn read) eof)
probe entry f
  filter eof`},
		{"comments", "# hash\n// slashes\nf /* inside */ { /* multi\nline */ print(a) // end\n # hash again\n}\n/**/", `
probe entry f
  print(a)`},
		{"brief example", `
define conn = r->connection      // a shared named expression
ngx_http_finalize_request, ngx_http_terminate_request / rc == 499 || conn->read->eof / {
    c = conn                     // a local name
    print(rc, status = r->headers_out.status, c->number, c->addr_text)
    printf("conn *%d eof=%d\n", c->number, c->read->eof)
    stack
    @fin[probe, r->headers_out.status] = count()
}
ngx_unix_recv%return / c->addr_text == "127.0.0.1" / { @bytes[c->number] = sum($retval) }
src/os/unix/ngx_recv.c:60 { print(size) }
ngx_unix_recv+0x4 { }
`, `
define conn = (-> r connection)
probe entry ngx_http_finalize_request, entry ngx_http_terminate_request
  filter (|| (== rc 499) (-> (-> conn read) eof))
  let c = conn
  print(rc, status=(. (-> r headers_out) status), (-> c number), (-> c addr_text))
  printf("conn *%d eof=%d\n", (-> c number), (-> (-> c read) eof))
  stack
  @fin[probe, (. (-> r headers_out) status)] = count()
probe return ngx_unix_recv
  filter (== (-> c addr_text) "127.0.0.1")
  @bytes[(-> c number)] = sum($retval)
probe line src/os/unix/ngx_recv.c:60
  print(size)
probe offset ngx_unix_recv+0x4`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := mustParse(t, c.src)
			got := strings.TrimSpace(dumpScript(s))
			if want := strings.TrimSpace(c.want); got != want {
				t.Errorf("parse of\n%s\n got:\n%s\nwant:\n%s", c.src, got, want)
			}
			// Printing the tree back gives the same tree.
			again := mustParse(t, format(s))
			if d := strings.TrimSpace(dumpScript(again)); d != got {
				t.Errorf("reparse of\n%s\n got:\n%s\nwant:\n%s", format(s), d, got)
			}
		})
	}
}

// TestParseTexts checks the source texts the output names values by.
func TestParseTexts(t *testing.T) {
	s := mustParse(t, `f {
	print(c->number /* the connection */, n = r->headers_out.status // status
	)
	@m[ c->addr_text /* k */ ] = sum( $retval /* v */ )
}`)
	p := s.Probes[0].Body[0].(*script.Print)
	if p.Args[0].Name != "c->number" || p.Args[0].Text != "c->number" {
		t.Errorf("first print arg named %q, text %q; want c->number without the comment", p.Args[0].Name, p.Args[0].Text)
	}
	if p.Args[1].Name != "n" || p.Args[1].Text != "r->headers_out.status" {
		t.Errorf("second print arg named %q, text %q", p.Args[1].Name, p.Args[1].Text)
	}
	a := s.Probes[0].Body[1].(*script.Aggregate)
	if a.Keys[0].Text != "c->addr_text" || a.Keys[0].Name != "c->addr_text" || a.ArgText != "$retval" {
		t.Errorf("aggregation key %q (%q), argument %q", a.Keys[0].Text, a.Keys[0].Name, a.ArgText)
	}
	if got := s.Probes[0].Points[0].Text; got != "f" {
		t.Errorf("point text %q", got)
	}
}

// TestParsePositions checks that nodes point at their source.
func TestParsePositions(t *testing.T) {
	src := "define conn = r->connection\n\nngx_a, ngx_b%return / rc == 499 / {\n\tc = conn\n\t@m[c->number] = count()\n}\n"
	s := mustParse(t, src)
	pos := func(at int) string {
		p := s.Files.Position(at)
		return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
	}
	p := s.Probes[0]
	checks := []struct {
		what string
		at   int
		want string
	}{
		{"define name", s.Defines[0].At, "t.ngxp:1:8"},
		{"define value (the arrow)", s.Defines[0].X.Pos(), "t.ngxp:1:16"},
		{"probe", p.At, "t.ngxp:3:1"},
		{"first point", p.Points[0].At, "t.ngxp:3:1"},
		{"second point", p.Points[1].At, "t.ngxp:3:8"},
		{"filter operator", p.Filter.Pos(), "t.ngxp:3:26"},
		{"filter operand", p.Filter.(*script.BinaryExpr).L.Pos(), "t.ngxp:3:23"},
		{"local", p.Body[0].Pos(), "t.ngxp:4:2"},
		{"aggregation", p.Body[1].Pos(), "t.ngxp:5:2"},
	}
	for _, c := range checks {
		if got := pos(c.at); got != c.want {
			t.Errorf("%s at %s, want %s", c.what, got, c.want)
		}
	}
	if got := s.Files.Position(p.Points[1].At).LineText; got != "ngx_a, ngx_b%return / rc == 499 / {" {
		t.Errorf("LineText %q", got)
	}
	if got := s.Files.Text(p.Points[1].At, p.Points[1].At+len(p.Points[1].Text)); got != "ngx_b%return" {
		t.Errorf("Text of the second point: %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		src  string
		pos  string // line:col
		msg  string // a substring of the message
	}{
		{"unclosed body", "f {\n\tprint(a)\n", "1:3", "probe body not closed"},
		{"unclosed body at the end", "f / a / {", "1:9", "probe body not closed"},
		{"unclosed string", "f {\n\tprintf(\"abc\n\")\n}", "2:9", "string not closed"},
		{"string at the end of the file", `f { printf("abc`, "1:12", "string not closed"},
		{"unclosed comment", "f {\n  /* print(a)\n}\n", "2:3", "comment not closed"},
		{"unclosed comment at the top", "/*", "1:1", "comment not closed"},
		{"assignment in a filter", "f / rc = 499 / {}", "1:8", "'=' is not a comparison: use '=='"},
		{"chained comparison", "f / 1 < rc < 3 / {}", "1:12", "comparisons do not chain"},
		{"chained equality", "f / a == b == c / {}", "1:12", "comparisons do not chain"},
		{"unknown statement", "f {\n\tprnt(a)\n}", "2:2", `unknown statement "prnt"`},
		{"statement that is not a name", "f { 42 }", "1:5", `expected a statement, found "4"`},
		{"unknown aggregation", "f {\n  @m = cnt()\n}", "2:8", `unknown aggregation "cnt"; did you mean count`},
		{"unknown aggregation, nothing close", "f { @m[a] = histogram(a) }", "1:13", `unknown aggregation "histogram": use count(), sum(X), min(X), max(X) or avg(X)`},
		{"count with an argument", "f { @m = count(a) }", "1:16", "count takes no argument"},
		{"aggregation without a function", "f { @m[a] }", "1:11", `expected "=" after the map`},
		{"@ alone", "f { @ }", "1:7", `expected "=" after the map`},
		{"bad escape", `f { printf("a\qb") }`, "1:14", `unknown escape \q`},
		{"bad hex escape", `f / s == "\xZZ" / {}`, "1:11", `unknown escape \x`},
		{"escape at the end", `f / s == "\`, "1:11", "escape at the end of the text"},
		{"file without a line", "src/os/unix/ngx_recv.c { }", "1:1", `"src/os/unix/ngx_recv.c" is a source file: a line probe needs its line number`},
		{"base name without a line", "ngx_recv.c {}", "1:1", "is a source file"},
		{"file with an empty line", "ngx_recv.c: {}", "1:1", "a line probe is FILE:LINE with a positive line number"},
		{"line zero", "ngx_recv.c:0 {}", "1:1", "a line probe is FILE:LINE with a positive line number"},
		{"line that is not a number", "x.c:abc {}", "1:1", "a line probe is FILE:LINE"},
		{"filter glued to the point", "f/ a / {}", "1:1", "a filter needs a space before its /"},
		{"offset that is not a number", "ngx_unix_recv+abc {}", "1:15", `"abc": the offset must be a number, e.g. ngx_unix_recv+0x1a`},
		{"empty offset", "ngx_unix_recv+ {}", "1:15", "the offset must be a number"},
		{"offset without a function", "+4 {}", "1:1", "is not a function name"},
		{"bad function name", "f%entry {}", "1:1", `"f%entry" is not a function name`},
		{"no probe point", "{ print(a) }", "1:1", "expected a probe point"},
		{"missing body", "f / a /", "1:8", `expected "{" to open the probe body, found the end of the file`},
		{"filter not closed", "f / a {}", "1:7", `expected "/" to end the filter, found "{"`},
		{"missing comma between arguments", "f { print(a b) }", "1:13", `expected "," between arguments, found "b"`},
		{"print without parentheses", "f { print a }", "1:11", `expected "(" after print`},
		{"printf without a format", "f { printf(a) }", "1:12", "expected a string in double quotes"},
		{"empty expression", "f / / {}", "1:5", "expected an expression"},
		{"index not a number", "f { print(a[i]) }", "1:13", "an index must be a number literal"},
		{"member name missing", "f { print(a->) }", "1:14", "expected a member name after ->"},
		{"minus on a name", "f / -a == 1 / {}", "1:6", "'-' applies to number literals only"},
		{"minus on a parenthesis", "f / -(1) == 1 / {}", "1:6", "'-' applies to number literals only"},
		{"bad number", "f / a == 12abc / {}", "1:10", `"12abc" is not a number`},
		{"number too large", "f / a == 0x10000000000000000 / {}", "1:10", "is not a number"},
		{"negative number too large", "f / a == -0x8000000000000001 / {}", "1:11", "out of range"},
		{"char literal too long", "f / a == 'ab' / {}", "1:10", "a character literal holds one character"},
		{"char literal not closed", "f / a == '", "1:10", "character literal not closed"},
		{"define without a name", "define = a", "1:8", "expected a name after define"},
		{"define without =", "define a b", "1:10", `expected "=" after the defined name`},
		{"include without a string", "include common.ngxp", "1:9", "expected a string in double quotes"},
		{"unicode in a point", "ngx_ünix {}", "1:5", `expected "{" to open the probe body, found "ü"`},
		{"unicode statement", "f { ünix }", "1:5", `expected a statement, found "ü"`},
		{"name after the end", "f { print(a->", "1:14", "expected a member name after ->, found the end of the file"},
		{"end of the file after blank lines", "f / a\n\n\n", "1:6", `expected "/" to end the filter, found the end of the file`},
		{"NUL byte", "f { print(a\x00) }", "1:12", "expected \",\" between arguments"},
		{"deep parentheses", "f / " + strings.Repeat("(", 500) + "a" + strings.Repeat(")", 500) + " / {}", "1:", "expression nested deeper than"},
		{"deep negation", "f / " + strings.Repeat("!", 500) + "a / {}", "1:", "expression nested deeper than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := script.ParseText("t.ngxp", c.src, noInclude)
			if err == nil {
				t.Fatalf("parse of %q succeeded:\n%s", c.src, dumpScript(s))
			}
			if s != nil {
				t.Errorf("parse returned a script and an error")
			}
			if !errors.Is(err, script.ErrSyntax) {
				t.Errorf("errors.Is(err, ErrSyntax) is false for %v", err)
			}
			if errors.Is(err, script.ErrResolve) || errors.Is(err, script.ErrInclude) {
				t.Errorf("a syntax error matches another sentinel: %v", err)
			}
			checkErrorList(t, err, map[string]string{"t.ngxp": c.src})
			list := err.(script.ErrorList)
			if len(list) != 1 {
				t.Errorf("%d errors, want 1 (the first error in a file ends it): %v", len(list), err)
			}
			e := list[0]
			if got := fmt.Sprintf("%d:%d", e.Pos.Line, e.Pos.Col); !strings.HasPrefix(got, c.pos) {
				t.Errorf("error at %s, want %s: %v", got, c.pos, e)
			}
			if !strings.Contains(e.Msg, c.msg) {
				t.Errorf("message %q, want it to contain %q", e.Msg, c.msg)
			}
		})
	}
}

// TestErrorFormat checks the whole rendering: position, line, caret,
// hint; tabs in the line keep the caret aligned.
func TestErrorFormat(t *testing.T) {
	_, err := script.ParseText("probe.ngxp", "# a probe\nf {\n\t@m = cnt()\n}\n", noInclude)
	want := "probe.ngxp:3:7: unknown aggregation \"cnt\"; did you mean count or avg? (count, sum, min, max, avg)\n" +
		"    \t@m = cnt()\n" +
		"    \t     ^"
	if err == nil || err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}

	// An error in each of two files: both reported, counted, in order.
	m := newMemFS(map[string]string{"dir/bad.ngxp": "g / a = 1 / {}"})
	_, err = script.ParseText("dir/main.ngxp", "include \"bad.ngxp\"\nf { print(a }\n", m.read)
	want = "dir/bad.ngxp:1:7: '=' is not a comparison: use '=='\n" +
		"    g / a = 1 / {}\n" +
		"          ^\n" +
		"dir/main.ngxp:2:13: expected \",\" between arguments, found \"}\"\n" +
		"    f { print(a }\n" +
		"                ^\n" +
		"2 errors"
	if err == nil || err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}

	// A hint is printed after the caret.
	e := &script.Error{Pos: script.Position{File: "x", Line: 1, Col: 2, LineText: "ab"}, Msg: "m", Hint: "h", Err: script.ErrResolve}
	if got, want := e.Error(), "x:1:2: m\n    ab\n     ^\n  hint: h"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if !errors.Is(e, script.ErrResolve) {
		t.Errorf("errors.Is(*Error, its sentinel) is false")
	}
}

func TestInclude(t *testing.T) {
	t.Run("relative to the including file, once", func(t *testing.T) {
		m := newMemFS(map[string]string{
			"conf/probes/common.ngxp": "define conn = r->connection\n",
			"conf/probes/a.ngxp":      "include \"common.ngxp\"\ndefine a = conn->fd\n",
			"conf/probes/b.ngxp":      "include \"common.ngxp\";\ndefine b = conn->number\n",
		})
		s, err := script.ParseText("conf/main.ngxp", "include \"probes/a.ngxp\"\ninclude \"probes/b.ngxp\"\ninclude \"probes/common.ngxp\"\nf / a / { print(b) }\n", m.read)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range s.Defines {
			names = append(names, d.Name)
		}
		if got := strings.Join(names, " "); got != "conn a b" {
			t.Errorf("defines %q, want %q (each file once, in include order)", got, "conn a b")
		}
		if m.reads["conf/probes/common.ngxp"] != 1 {
			t.Errorf("common.ngxp read %d times", m.reads["conf/probes/common.ngxp"])
		}
		if got := s.Files.Position(s.Defines[1].At).String(); got != "conf/probes/a.ngxp:2:8" {
			t.Errorf("define a at %s", got)
		}
	})
	t.Run("cycle", func(t *testing.T) {
		m := newMemFS(map[string]string{
			"a.ngxp": "include \"b.ngxp\"\ndefine x = r->connection\nf { print(y) }\n",
			"b.ngxp": "include \"a.ngxp\"\ndefine y = x->fd\n",
		})
		s, err := script.ParseText("a.ngxp", mustRead(t, m, "a.ngxp"), m.read)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Defines) != 2 || len(s.Probes) != 1 {
			t.Errorf("%d defines and %d probes, want 2 and 1:\n%s", len(s.Defines), len(s.Probes), dumpScript(s))
		}
		if m.reads["a.ngxp"] != 1 || m.reads["b.ngxp"] != 1 {
			t.Errorf("reads: %v", m.reads)
		}
	})
	t.Run("self", func(t *testing.T) {
		m := newMemFS(map[string]string{"self.ngxp": "include \"self.ngxp\"\nf {}\n"})
		s, err := script.ParseText("self.ngxp", m.files["self.ngxp"], m.read)
		if err != nil || len(s.Probes) != 1 {
			t.Fatalf("%v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		src := "define x = 1\n  include \"nope.ngxp\"\nf {}\n"
		s, err := script.ParseText("dir/main.ngxp", src, newMemFS(nil).read)
		if err == nil {
			t.Fatalf("parsed: %s", dumpScript(s))
		}
		if !errors.Is(err, script.ErrInclude) || errors.Is(err, script.ErrSyntax) {
			t.Errorf("want ErrInclude only: %v", err)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the read error is not wrapped: %v", err)
		}
		checkErrorList(t, err, map[string]string{"dir/main.ngxp": src})
		e := err.(script.ErrorList)[0]
		if got := e.Pos.String(); got != "dir/main.ngxp:2:11" {
			t.Errorf("error at %s, want the path's string", got)
		}
		for _, want := range []string{`include "nope.ngxp"`, "dir/nope.ngxp"} {
			if !strings.Contains(e.Msg, want) {
				t.Errorf("message %q does not name %q", e.Msg, want)
			}
		}
		if !strings.Contains(e.Hint, "relative to the including file") {
			t.Errorf("hint %q", e.Hint)
		}
	})
	t.Run("error inside an included file", func(t *testing.T) {
		m := newMemFS(map[string]string{"lib.ngxp": "\n\ndefine x = a->\n"})
		_, err := script.ParseText("main.ngxp", "include \"lib.ngxp\"\nf {}\n", m.read)
		var list script.ErrorList
		if !errors.As(err, &list) || len(list) != 1 {
			t.Fatalf("%v", err)
		}
		if got := list[0].Pos.String(); got != "lib.ngxp:3:15" {
			t.Errorf("error at %s, want lib.ngxp:3:15: %v", got, err)
		}
	})
	t.Run("too deep", func(t *testing.T) {
		files := map[string]string{}
		for i := range 30 {
			files[fmt.Sprintf("f%d.ngxp", i)] = fmt.Sprintf("include \"f%d.ngxp\"\n", i+1)
		}
		m := newMemFS(files)
		_, err := script.ParseText("f0.ngxp", files["f0.ngxp"], m.read)
		if err == nil || !strings.Contains(err.Error(), "includes nested deeper than 16") {
			t.Fatalf("%v", err)
		}
		if len(m.reads) > 17 {
			t.Errorf("read %d files", len(m.reads))
		}
	})
}

func mustRead(t *testing.T, m *memFS, path string) string {
	t.Helper()
	b, err := m.read(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestParseFile reads real files: testdata/include has a diamond and a
// cycle.
func TestParseFile(t *testing.T) {
	s, err := script.ParseFile(filepath.Join("testdata", "include", "main.ngxp"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(`
define conn = (-> r connection)
define eof = (-> (-> conn read) eof)
define peer = (-> conn addr_text)
probe entry ngx_http_finalize_request
  filter (&& eof (== peer "127.0.0.1"))
  print(rc)
probe return ngx_unix_recv
  @bytes[(-> c number)] = sum($retval)`)
	if got := strings.TrimSpace(dumpScript(s)); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if f := s.Files.Position(s.Defines[0].At).File; f != filepath.Join("testdata", "include", "common.ngxp") {
		t.Errorf("define conn is in %q", f)
	}

	// a.ngxp includes b.ngxp, which includes a.ngxp: each is read once.
	s, err = script.ParseFile(filepath.Join("testdata", "include", "cycle", "a.ngxp"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want = strings.TrimSpace(`
define b = (-> a number)
define a = (-> r connection)
probe entry ngx_http_finalize_request
  print(b)`)
	if got := strings.TrimSpace(dumpScript(s)); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}

	_, err = script.ParseFile(filepath.Join("testdata", "include", "missing.ngxp"), nil)
	if !errors.Is(err, script.ErrInclude) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing main file: %v", err)
	}
}

// TestParseLinear checks that parsing time grows linearly with the
// input for the shapes a quadratic parser would choke on: no deadline,
// a growth ratio. Eight times the input may cost at most 32 times the
// time (linear is 8, quadratic 64); at these sizes a quadratic parser
// takes seconds for the smaller input already.
func TestParseLinear(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	shapes := map[string]func(n int) string{
		"probes":          func(n int) string { return strings.Repeat("f / a->b == 1 / { print(a, b->c[2]) }\n", n/40) },
		"member chain":    func(n int) string { return "f { print(a" + strings.Repeat("->b", n/3) + ") }" },
		"conditions":      func(n int) string { return "f / a" + strings.Repeat(" && b || !c", n/11) + " / {}" },
		"comments":        func(n int) string { return "f {" + strings.Repeat("/* x */ # y\n", n/12) + "}" },
		"unclosed string": func(n int) string { return `f { printf("` + strings.Repeat("x", n) },
		"unclosed body":   func(n int) string { return "f {" + strings.Repeat(" stack", n/6) },
		"unclosed comment after probes": func(n int) string {
			return strings.Repeat("f {}\n", n/5) + "/*"
		},
		"casts": func(n int) string { return "f { print(x" + strings.Repeat(", ((ngx_t *) x)->y", n/18) + ") }" },
		"include cycle": func(n int) string {
			return strings.Repeat("include \"t.ngxp\" # "+strings.Repeat("x", 100)+"\n", n/120)
		},
	}
	for name, gen := range shapes {
		t.Run(name, func(t *testing.T) {
			// Big enough to time well: a few milliseconds at least.
			n := 1 << 18
			small := gen(n)
			ts := minParseTime(small)
			for ts < 3*time.Millisecond && n < 1<<22 {
				n *= 2
				small = gen(n)
				ts = minParseTime(small)
			}
			if ts > time.Second {
				t.Fatalf("%d bytes took %v", len(small), ts)
			}
			large := gen(8 * n)
			tl := minParseTime(large)
			ratio := float64(tl) / float64(max(ts, 1))
			t.Logf("%d bytes: %v, %d bytes: %v, ratio %.1f", len(small), ts, len(large), tl, ratio)
			if ratio > 32 {
				t.Errorf("parsing 8x the input took %.1fx the time: not linear", ratio)
			}
		})
	}
}

// minParseTime is the fastest of a few parses of src.
func minParseTime(src string) time.Duration {
	best := time.Duration(1<<63 - 1)
	for range 3 {
		runtime.GC()
		start := time.Now()
		script.ParseText("t.ngxp", src, func(string) ([]byte, error) { return []byte(src), nil })
		best = min(best, time.Since(start))
	}
	return best
}

// A leading string in print labels the line its values go on.
func TestPrintLabel(t *testing.T) {
	s, err := script.ParseText("t.ngxp", `f { print("client read", eof = c->read->eof, c->fd); print("empty"); print(c->fd) }`, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range s.Probes[0].Body {
		p := st.(*script.Print)
		got = append(got, fmt.Sprintf("%q:%d", p.Label, len(p.Args)))
	}
	if want := `"client read":2 "empty":0 "":1`; strings.Join(got, " ") != want {
		t.Errorf("labels %s, want %s", strings.Join(got, " "), want)
	}
	for _, bad := range []string{`f { print("a" c->fd) }`, `f { print("a", ) }`, `f { print("unclosed) }`} {
		if _, err := script.ParseText("t.ngxp", bad, nil); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
}
