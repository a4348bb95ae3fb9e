package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// redactScript prints what a tenant's request carries: the request line
// and URI with their query, the query itself, the Authorization and
// first Cookie header values and the User-Agent, in values, a printf
// line and an aggregation key.
const redactScript = `ngx_http_finalize_request {
    print(line = r->request_line, uri = r->unparsed_uri, args = r->args,
          auth = r->headers_in.authorization->value,
          cookie = ((ngx_table_elt_t **) r->headers_in.cookies.elts)[0]->value,
          agent = r->headers_in.user_agent->value)
    printf("request %s cookie %s\n", r->request_line, ((ngx_table_elt_t **) r->headers_in.cookies.elts)[0]->value)
    @by_line[r->request_line] = count()
}`

// redactRequests are what a hostile tenant sends. nginx answers the
// first with 400 (a control character in the request line), and its
// error log handler, at info, still sets r->request_line to it.
var redactRequests = []string{
	"GET /a\x1b[31m\x1b]0;title\x07?token=secret1 HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /b\x9b?token=secret2&x=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: ua\x1b[2J\x07\r\n" +
		"Cookie: sid=secret3\x1b]0;t\x07\r\nAuthorization: Bearer secret4\r\nConnection: close\r\n\r\n",
}

// rawRequest sends req, as it is, on a new connection and returns the
// response's status code.
func rawRequest(t testing.TB, addr, req string) int {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Deadline: time.Now().Add(5 * time.Second)}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("send %q: %v", req, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the response to %q: %v", req, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// With --redact, no secret a request carries (query values, cookie,
// authorization) reaches stdout, in text or JSON; without it they do,
// escaped. In no case does a raw ESC or BEL from the request reach the
// terminal.
func TestRedact(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	s, base := startPlain(t, inst, 1, "")
	addr := strings.TrimPrefix(base, "http://")
	secrets := []string{"secret1", "secret2", "secret3", "secret4", "Bearer"}
	for _, c := range []struct {
		format string
		redact bool
		// want are what the output must show: masked queries and headers
		// with --redact, the escaped sequences without.
		want []string
	}{
		{"text", true, []string{`token=***`, `token=***&x=***`, `auth="***"`, `cookie="***"`, `cookie ***`, `ua\x1b[2J\a`}},
		{"json", true, []string{`token=***`, `token=***\u0026x=***`, `"value":"***"`, `cookie ***`, `ua\u001b[2J\u0007`}},
		{"text", false, []string{`\x1b[31m\x1b]0;title\a?token=secret1`, `/b\x9b?token=secret2&x=1`, `auth="Bearer secret4"`, `sid=secret3\x1b]0;t\a`}},
		{"json", false, []string{`\u001b[31m\u001b]0;title\u0007?token=secret1`, `/b\ufffd?token=secret2\u0026x=1`, `"Bearer secret4"`, `sid=secret3\\x1b]0;t\\a`}},
	} {
		name := c.format
		if c.redact {
			name += "/redact"
		}
		t.Run(name, func(t *testing.T) {
			args := []string{"run", "-p", strconv.Itoa(s.MasterPID()), "-o", c.format, "-e", redactScript}
			if c.redact {
				args = append(args, "--redact")
			}
			p := startProbe(t, args...)
			if got := rawRequest(t, addr, redactRequests[0]); got != http.StatusBadRequest {
				t.Errorf("the request line with control characters: status %d, want 400", got)
			}
			if got := rawRequest(t, addr, redactRequests[1]); got != http.StatusOK {
				t.Errorf("the request with a cookie and authorization: status %d, want 200", got)
			}
			stopProbeOK(t, p)
			out := p.stdout.String()
			if c.format == "json" {
				events(t, p) // every line is JSON
			}
			for _, raw := range []string{"\x1b", "\x07", "\x9b"} {
				if strings.Contains(out, raw) || strings.Contains(p.stderr.String(), raw) {
					t.Errorf("%q reached the output raw: %s", raw, p)
				}
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %s: %s", w, p)
				}
			}
			for _, secret := range secrets {
				if got := strings.Contains(out, secret); got == c.redact {
					t.Errorf("secret %q in the output: %v, want %v: %s", secret, got, !c.redact, p)
				}
			}
		})
	}
}
