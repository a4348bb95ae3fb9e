package output

import (
	"regexp"
	"testing"
)

func TestRedactor(t *testing.T) {
	r := NewRedactor([]*regexp.Regexp{regexp.MustCompile(`password|secret`), regexp.MustCompile(`^tok$`)})
	for _, c := range []struct{ name, expr, in, want string }{
		// Query strings: keys kept, values masked.
		{"line", "r->request_line", "GET /a?token=abc&x=1 HTTP/1.1", "GET /a?token=***&x=*** HTTP/1.1"},
		{"uri", "r->unparsed_uri", "/a?b&c=&&d=1", "/a?***&c=***&&d=***"},
		{"uri", "r->unparsed_uri", "/a?", "/a?"},
		{"uri", "r->uri", "/a/b", "/a/b"},
		{"ref", "r->headers_in.referer->value", "https://h.example/p?q=1#frag", "https://h.example/p?q=***#frag"},
		{"args", "r->args", "token=abc&x=1", "token=***&x=***"},
		{"s", "s", "what? x=1", "what? x=1"},
		{"s", "s", "a?/b?c=1 /d?e=2", "a?/b?c=*** /d?e=***"},
		{"s", "s", `uri=/a?b=1, x`, `uri=/a?b=*** x`},
		{"s", "s", `uri="/a?b=se"cret"`, `uri="/a?b=***`},
		{"line", "r->request_line", "GET /a\x1b[31m\x1b]0;t\a?token=abc HTTP/1.1", "GET /a\x1b[31m\x1b]0;t\a?token=*** HTTP/1.1"},
		{"line", "r->request_line", `GET /"a[(<,=?token=abc HTTP/1.1`, `GET /"a[(<,=?token=*** HTTP/1.1`},
		{"s", "s", "/a?x=1?y=2 tail", "/a?x=*** tail"},
		// Credential headers: whole values, and header lines.
		{"auth", "r->headers_in.authorization->value", "Bearer x", Mask},
		{"c", "((ngx_table_elt_t **) r->headers_in.cookies.elts)[0]->value", "sid=1", Mask},
		{"cookie", "h->value", "sid=1", Mask},
		{"pw", "r->headers_in.passwd", "hunter2", Mask},
		{"h", "h", "Authorization: Bearer x", "Authorization: ***"},
		{"h", "h", "set-cookie:sid=1; Path=/", "set-cookie: ***"},
		{"buf", "r->header_in->start", "GET /?a=1 HTTP/1.1\r\nHost: h\r\nCookie: sid=1\r\nProxy-Authorization: Basic eA==\r\n\r\n",
			"GET /?a=*** HTTP/1.1\r\nHost: h\r\nCookie: ***\r\nProxy-Authorization: ***\r\n\r\n"},
		{"host", "r->headers_in.host->value", "example.com", "example.com"},
		// --redact-field patterns, on the name or the expression.
		{"p", "r->password", "x", Mask},
		{"my_secret", "x", "x", Mask},
		{"tok", "x", "x", Mask},
		{"token", "x", "x", "x"},
	} {
		got := r.String(c.name, c.expr, c.in)
		if got != c.want {
			t.Errorf("String(%q, %q, %q) = %q, want %q", c.name, c.expr, c.in, got, c.want)
		}
		if again := r.String(c.name, c.expr, got); again != got {
			t.Errorf("String of the masked %q = %q, want it unchanged", got, again)
		}
	}
	if !r.Field("rc", "my_secret") || r.Field("rc", "rc") {
		t.Errorf("Field matches the patterns against name and expression only")
	}
	if got := r.Text(`request "GET /a?token=abc HTTP/1.1", Cookie: sid=1`); got != `request "GET /a?token=*** HTTP/1.1", Cookie: ***` {
		t.Errorf("Text = %q", got)
	}
	var off *Redactor
	if off.String("auth", "authorization", "x") != "x" || off.Text("/a?b=1") != "/a?b=1" || off.Field("password", "") {
		t.Errorf("a nil Redactor masks")
	}
}
