package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/incidents"
	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// The lua-* examples: Lua code in a gateway closes connections, or waits
// on one that its peer closes. They need lua-nginx-module, so they run on
// the packaged nginx with OpenResty's parts as Debian packages them
// (nginxtest.BuildOpenResty), not on our own builds. Each scenario runs
// the example's Lua module, the very text its README shows, and checks
// the Lua file:line and function the example prints against the lines of
// that text, and the *N against nginx's logs.

// luaExampleNames are the examples that need lua-nginx-module: ngxprobe
// check resolves them against an nginx that loads it (-p, or --binary
// with --module), which TestExampleCheck's builds do not.
var luaExampleNames = []string{"lua-exit-444", "lua-cosocket-reset", "lua-websocket-close"}

// The examples' Lua modules, as their READMEs show them under
// /etc/nginx/lua (the scenarios put them in a temporary directory).

const luaExAuth = `-- The gateway's API key check, run in the access phase. A request
-- without a known key gets no answer at all: ngx.exit(444) closes the
-- connection.
local _M = {}

local tenants = { ["k-7f3a91"] = "billing", ["k-2c04e8"] = "search" }

local function reject(reason)
    ngx.ctx.reject = reason
    ngx.exit(444)
end

function _M.check()
    local key = ngx.var.http_x_api_key
    if key == nil then
        reject("no key")
    elseif tenants[key] == nil then
        reject("unknown key")
    else
        ngx.req.set_header("X-Tenant", tenants[key])
    end
end

return _M
`

const luaExQuote = `-- The gateway's price lookup: one line to the quote service over a
-- cosocket, one line back. On failure the client gets a 502; the
-- plugin logs nothing itself.
local _M = {}

local function ask(sock, symbol)
    local ok, err = sock:send("PRICE " .. symbol .. "\n")
    if not ok then
        return nil, err
    end
    local line, err = sock:receive("*l")
    return line, err
end

function _M.price()
    local sock = ngx.socket.tcp()
    sock:settimeout(2000)
    local ok, err = sock:connect(ngx.var.quote_host, tonumber(ngx.var.quote_port))
    if not ok then
        return ngx.exit(ngx.HTTP_BAD_GATEWAY)
    end
    local line, err = ask(sock, ngx.var.arg_symbol or "")
    if not line then
        return ngx.exit(ngx.HTTP_BAD_GATEWAY)
    end
    sock:setkeepalive()
    ngx.say(line)
end

return _M
`

const luaExChat = `-- A websocket endpoint on the raw request socket, as lua-resty-websocket's
-- server does it, cut down to short text frames: each message comes back
-- as "echo: MESSAGE". A message over 64 bytes ends the connection.
local bit = require "bit"

local _M = {}

local MAX_MESSAGE = 64

local function handshake()
    local key = ngx.var.http_sec_websocket_key
    if not key then
        return nil, "not a websocket request"
    end
    ngx.status = 101
    ngx.header["Upgrade"] = "websocket"
    ngx.header["Sec-WebSocket-Accept"] = ngx.encode_base64(ngx.sha1_bin(key .. "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
    ngx.send_headers()
    ngx.flush(true)
    return ngx.req.socket(true)
end

-- One masked frame from the client: its payload, or nil and why.
local function recv_frame(sock)
    local head, err = sock:receive(2)
    if not head then
        return nil, err
    end
    local len = bit.band(head:byte(2), 0x7f)
    if len > MAX_MESSAGE then
        return nil, "too big"
    end
    local data, err = sock:receive(4 + len)
    if not data then
        return nil, err
    end
    local out = {}
    for i = 1, len do
        out[i] = string.char(bit.bxor(data:byte(4 + i), data:byte((i - 1) % 4 + 1)))
    end
    return table.concat(out)
end

local function send_frame(sock, opcode, payload)
    return sock:send(string.char(0x80 + opcode, #payload) .. payload)
end

function _M.serve()
    local sock, err = handshake()
    if not sock then
        return ngx.exit(ngx.HTTP_BAD_REQUEST)
    end
    while true do
        local msg, err = recv_frame(sock)
        if err == "too big" then
            send_frame(sock, 0x8, "\x03\xf1") -- close, 1009: message too big
            ngx.exit(444)
        end
        if not msg then
            return
        end
        send_frame(sock, 0x1, "echo: " .. msg)
    end
end

return _M
`

// luaExampleCase is one lua-* example script against one scenario.
type luaExampleCase struct {
	example  string // examples/EXAMPLE/EXAMPLE.ngxp
	scenario string // the subtest name
	module   string // the Lua module's file name, e.g. "auth.lua"
	source   string // its text
	// server is the http{} body of the example's server{} block, on r.addr
	// (r.plain and r.backend may serve as its backends).
	server func(r *luaRun) string
	// backend starts what the Lua code talks to and returns its address
	// (nil: none).
	backend func(t *testing.T) string
	// healthy is traffic, sent right after the incident, that the
	// example's filters leave out (nil: none). After: a cosocket it reuses
	// from the keepalive pool has no peer address.
	healthy func(t *testing.T, r *luaRun)
	// trigger makes the incident happen and returns its $request.
	trigger func(t *testing.T, r *luaRun) string
	ready   func(r *luaRun) bool          // the diagnostic events are out
	check   func(t *testing.T, r *luaRun) // the diagnosis is in them
}

// luaRun is one lua-* example run: exRun's events and assertions, with
// what the Lua scenarios add.
type luaRun struct {
	exRun
	c       luaExampleCase
	addr    string // the example's server, host:port
	plain   string // a plain server (location / returns 200 "ok\n"), host:port
	backend string // what c.backend returned
	dir     string // the directory of the Lua module
	conf    string // nginx.conf, as nginx read it
	// access is the incident's access-log entry: its $connection is conn.
	access nginxtest.AccessEntry
	// lines are the error-log lines of the incident's connection.
	lines []incidents.LogLine
	sum   Summary
}

// line is the number of the Lua module's only line that reads text
// (leading and trailing blanks aside).
func (r *luaRun) line(text string) int {
	r.t.Helper()
	return onlyLine(r.t, r.c.module, r.c.source, text)
}

// at is "path:line" of that line, as $lua_where and stacks name it.
func (r *luaRun) at(text string) string {
	r.t.Helper()
	return fmt.Sprintf("%s/%s:%d", r.dir, r.c.module, r.line(text))
}

// chunk is the name lua-nginx-module gives the inline chunk of the
// directive (e.g. "access_by_lua_block"): "access_by_lua(nginx.conf:N)",
// N the directive's line in nginx.conf.
func (r *luaRun) chunk(directive string) string {
	r.t.Helper()
	n := 0
	for i, l := range strings.Split(r.conf, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), directive+" ") {
			if n != 0 {
				r.t.Fatalf("nginx.conf has %s on lines %d and %d", directive, n, i+1)
			}
			n = i + 1
		}
	}
	if n == 0 {
		r.t.Fatalf("nginx.conf has no %s:\n%s", directive, r.conf)
	}
	return fmt.Sprintf("%s(nginx.conf:%d)", strings.TrimSuffix(directive, "_block"), n)
}

// onlyLine is the number of the only line of text that reads want.
func onlyLine(t testing.TB, name, text, want string) int {
	t.Helper()
	n := 0
	for i, l := range strings.Split(text, "\n") {
		if strings.TrimSpace(l) == want {
			if n != 0 {
				t.Fatalf("%s: %q is on lines %d and %d", name, want, n, i+1)
			}
			n = i + 1
		}
	}
	if n == 0 {
		t.Fatalf("%s has no line %q", name, want)
	}
	return n
}

// wantLua checks the Lua frames of the event's stack, innermost first:
// each matches its pattern (a regular expression, whole text).
func (r *luaRun) wantLua(ev exEvent, patterns ...string) {
	r.t.Helper()
	if ev.Stack == nil {
		r.t.Errorf("%s event has no stack", ev.Probe)
		return
	}
	got := luaTexts(ev.Stack)
	ok := len(got) == len(patterns)
	for i := 0; ok && i < len(got); i++ {
		ok = regexp.MustCompile("^(?:" + patterns[i] + ")$").MatchString(got[i])
	}
	if !ok {
		r.t.Errorf("%s event: Lua frames\n\t%s\nwant\n\t%s", ev.Probe, strings.Join(got, "\n\t"), strings.Join(patterns, "\n\t"))
	}
}

// wantSuspended: the event's Lua frames are those of a coroutine that
// waits to be resumed, marked so before them.
func (r *luaRun) wantSuspended(ev exEvent) {
	r.t.Helper()
	if ev.Stack == nil {
		return
	}
	for _, f := range ev.Stack.Frames {
		if f.Lua != nil {
			if f.Lua.Kind != "suspended" {
				r.t.Errorf("%s event: the first Lua frame is %q (kind %q), want the mark of a suspended coroutine", ev.Probe, f.Lua.Text, f.Lua.Kind)
			}
			return
		}
	}
}

// wantMessage checks the event's one printf line.
func (r *luaRun) wantMessage(ev exEvent, want string) {
	r.t.Helper()
	if len(ev.Messages) != 1 || ev.Messages[0] != want {
		r.t.Errorf("%s event: printf %q, want %q", ev.Probe, ev.Messages, want)
	}
}

// probeSummary is the exit summary's row of the probe on fn.
func (r *luaRun) probeSummary(fn string) ProbeSummary {
	r.t.Helper()
	for _, ps := range r.sum.Probes {
		if ps.Function == fn {
			return ps
		}
	}
	r.t.Errorf("the exit summary has no row for %s: %+v", fn, r.sum)
	return ProbeSummary{}
}

// noLogLines: nginx logged nothing for the incident's connection, not
// even at info level (nginxtest's error_log level).
func (r *luaRun) noLogLines() {
	r.t.Helper()
	for _, l := range r.lines {
		r.t.Errorf("nginx logged for *%d, want nothing: %s", r.conn, l.Raw)
	}
}

// Lua frames above the code that called ngx.exit: the FFI call and
// resty.core's ngx.exit (the e2e Lua tests' exitFrames).
var luaExitPatterns = []string{exitFrames[0].String() + ".*", exitFrames[1].String()}

// luaReceivePattern is the C function of sock:receive().
const luaReceivePattern = `\[C\]: in function 'receive'`

// luaFrame is the pattern of one Lua frame's exact text.
func luaFrame(format string, args ...any) string {
	return regexp.QuoteMeta(fmt.Sprintf(format, args...))
}

func luaExitPatternsThen(more ...string) []string {
	return append(append([]string(nil), luaExitPatterns...), more...)
}

var luaExampleCases = []luaExampleCase{
	{
		// An unknown API key: the access-phase plugin calls ngx.exit(444).
		example: "lua-exit-444", scenario: "unknown-key", module: "auth.lua", source: luaExAuth,
		server: func(r *luaRun) string {
			return fmt.Sprintf(`
    server {
        listen %s;
        location /api/ {
            access_by_lua_block { require("auth").check() }
            proxy_pass http://%s;
        }
    }`, r.addr, r.plain)
		},
		healthy: func(t *testing.T, r *luaRun) {
			// Known keys pass: no probe of the example may fire.
			for i := range 50 {
				key := []string{"k-7f3a91", "k-2c04e8"}[i%2]
				status, body := exchangeHTTP(t, r.addr, "GET /api/orders HTTP/1.1\r\nHost: gw\r\nX-API-Key: "+key+"\r\nConnection: close\r\n\r\n")
				if status != 200 || body != "ok\n" {
					t.Fatalf("an allowed request: %d %q, want 200 \"ok\\n\"", status, body)
				}
			}
		},
		trigger: func(t *testing.T, r *luaRun) string {
			if got := exchange(t, r.addr, "GET /api/orders?id=7 HTTP/1.1\r\nHost: gw\r\nX-API-Key: k-0000\r\n\r\n"); len(got) != 0 {
				t.Errorf("a 444 answered %q, want the connection closed with no response", got)
			}
			return "GET /api/orders?id=7 HTTP/1.1"
		},
		ready: func(r *luaRun) bool {
			return len(r.all("ngx_http_lua_ffi_exit", byConn(r.run(), "conn"))) > 0 &&
				len(r.all("ngx_http_terminate_request", byConn(r.run(), "conn"))) > 0
		},
		check: func(t *testing.T, r *luaRun) {
			r.noLogLines()
			if r.access.Status != 444 || r.access.BodyBytesSent != 0 {
				t.Errorf("access log: %+v, want 444 with 0 bytes", r.access)
			}
			exit, ok1 := r.one("ngx_http_lua_ffi_exit", "the request", byConn(r.run(), "conn"))
			term, ok2 := r.one("ngx_http_terminate_request", "the request", byConn(r.run(), "conn"))
			if !ok1 || !ok2 {
				return
			}
			where := r.at("ngx.exit(444)")
			r.wantNum(exit, "status", 444)
			r.wantStr(exit, "where", where)
			r.wantStr(exit, "client_addr", "127.0.0.1")
			r.wantStr(exit, "request", r.access.Request)
			r.wantMessage(exit, fmt.Sprintf("*%d: ngx.exit(444) at %s\n", r.conn, where))
			r.wantLua(exit, luaExitPatternsThen(
				luaFrame("%s: in function 'reject'", where),
				luaFrame("%s: in function 'check'", r.at(`reject("unknown key")`)),
				luaFrame("%s:1: in main chunk", r.chunk("access_by_lua_block")))...)
			r.wantFrames(exit, "ngx_http_lua_ffi_exit", "ngx_http_lua_run_thread", "ngx_http_lua_access_by_chunk", "ngx_http_core_access_phase")

			r.wantNum(term, "rc", 444)
			r.wantNum(term, "sent", 0)
			r.wantFrames(term, "ngx_http_terminate_request", "ngx_http_core_access_phase")
			if r.index(exit) > r.index(term) {
				t.Errorf("the close is printed before the ngx.exit:\n%s", r.dump())
			}
			// The 50 allowed requests hit neither probe: one hit each, the 444.
			for _, fn := range []string{"ngx_http_lua_ffi_exit", "ngx_http_terminate_request"} {
				if ps := r.probeSummary(fn); ps.Hits != 1 || ps.Events != 1 {
					t.Errorf("%s: %d hits, %d events; want 1 and 1 (the 444 only: allowed requests must not hit it)", fn, ps.Hits, ps.Events)
				}
			}
		},
	},
	{
		// The quote service resets the cosocket the plugin reads from.
		example: "lua-cosocket-reset", scenario: "backend-rst", module: "quote.lua", source: luaExQuote,
		backend: quoteBackend,
		server: func(r *luaRun) string {
			host, port, _ := net.SplitHostPort(r.backend)
			return fmt.Sprintf(`
    server {
        listen %s;
        location = /api/price {
            set $quote_host %s;
            set $quote_port %s;
            content_by_lua_block { require("quote").price() }
        }
    }`, r.addr, host, port)
		},
		healthy: func(t *testing.T, r *luaRun) {
			// Reads that succeed hit the receive probe, and its filter
			// drops them in the kernel.
			for range 5 {
				status, body := exchangeHTTP(t, r.addr, "GET /api/price?symbol=XYZ HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
				if status != 200 || body != "PRICE XYZ 12.50\n" {
					t.Fatalf("a price: %d %q, want 200 \"PRICE XYZ 12.50\\n\"", status, body)
				}
			}
		},
		trigger: func(t *testing.T, r *luaRun) string {
			if status, _ := exchangeHTTP(t, r.addr, "GET /api/price?symbol=ACME HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"); status != 502 {
				t.Errorf("the reset price: status %d, want 502", status)
			}
			return "GET /api/price?symbol=ACME HTTP/1.1"
		},
		ready: func(r *luaRun) bool {
			return len(r.all("ngx_connection_error", byConn(r.run(), "logged_as"))) > 0 &&
				len(r.all("ngx_http_lua_socket_tcp_receive_retval_handler", byConn(r.run(), "conn"))) > 0
		},
		check: func(t *testing.T, r *luaRun) {
			if len(r.lines) != 1 || r.lines[0].Level != "error" || r.lines[0].Text != "recv() failed (104: Connection reset by peer)" {
				t.Errorf("error log for *%d: %v, want one [error] recv() failed (104: Connection reset by peer)", r.conn, r.lines)
			} else if req, _ := r.lines[0].Field("request"); req != r.access.Request {
				t.Errorf("error log: request %q, want %q", req, r.access.Request)
			}
			if r.access.Status != 502 {
				t.Errorf("access log: status %d, want 502", r.access.Status)
			}
			ce, ok1 := r.one("ngx_connection_error", "the request's cosocket", byConn(r.run(), "logged_as"))
			rv, ok2 := r.one("ngx_http_lua_socket_tcp_receive_retval_handler", "the request", byConn(r.run(), "conn"))
			if !ok1 || !ok2 {
				return
			}
			r.wantNum(ce, "err", int64(syscall.ECONNRESET))
			r.wantStr(ce, "text", "recv() failed")
			r.wantRole(ce, "role", "upstream")
			cosocket, ok := ce.num("conn")
			if !ok || cosocket == r.conn || cosocket <= exampleWarmups {
				t.Errorf("ngx_connection_error: conn %d (readable %v), want the cosocket's own number, not *%d", cosocket, ok, r.conn)
			}
			r.wantFrames(ce, "ngx_connection_error", "ngx_unix_recv", "ngx_http_lua_socket_tcp_read")

			where := r.at(`local line, err = sock:receive("*l")`)
			r.wantNum(rv, "ft_type", 1) // NGX_HTTP_LUA_SOCKET_FT_ERROR
			r.wantNum(rv, "socket_errno", int64(syscall.ECONNRESET))
			r.wantNum(rv, "cosocket_conn", cosocket)
			r.wantStr(rv, "peer", r.backend)
			r.wantNum(rv, "reused", 0)
			r.wantStr(rv, "where", where)
			r.wantStr(rv, "request", r.access.Request)
			r.wantMessage(rv, fmt.Sprintf("*%d: sock:receive() at %s failed: ft_type 1, errno 104\n", r.conn, where))
			r.wantSuspended(rv)
			r.wantLua(rv, `\(a coroutine waiting to be resumed, not running: its frames\)`, luaReceivePattern,
				luaFrame("%s: in function 'ask'", where),
				luaFrame("%s: in function 'price'", r.at(`local line, err = ask(sock, ngx.var.arg_symbol or "")`)),
				luaFrame("%s:1: in main chunk", r.chunk("content_by_lua_block")))
			r.wantFrames(rv, "ngx_http_lua_socket_tcp_receive_retval_handler", "ngx_http_lua_socket_tcp_read")
			if r.index(ce) > r.index(rv) {
				t.Errorf("the Lua side is printed before the failed recv():\n%s", r.dump())
			}
			if ps := r.probeSummary("ngx_connection_error"); ps.Hits != 1 {
				t.Errorf("ngx_connection_error: %d hits, want 1 (the reset only)", ps.Hits)
			}
			if ps := r.probeSummary("ngx_http_lua_socket_tcp_receive_retval_handler"); ps.Hits < 6 || ps.Events != 1 {
				t.Errorf("receive probe: %d hits, %d events; want >= 6 (every receive) and 1 (the failed one)", ps.Hits, ps.Events)
			}
		},
	},
	{
		// The client goes away while the Lua code waits for its next frame.
		example: "lua-websocket-close", scenario: "client-close", module: "chat.lua", source: luaExChat,
		server: chatServer,
		trigger: func(t *testing.T, r *luaRun) string {
			c, br := wsOpen(t, r.addr)
			wsSend(t, c, "hello")
			if op, msg := wsRecv(t, br); op != 0x1 || string(msg) != "echo: hello" {
				t.Fatalf("the echo: opcode %#x %q", op, msg)
			}
			if err := c.Close(); err != nil { // a FIN: nothing is left unread
				t.Fatal(err)
			}
			return "GET /chat HTTP/1.1"
		},
		ready: func(r *luaRun) bool {
			return len(r.all("ngx_http_lua_socket_tcp_receive_retval_handler", byConn(r.run(), "conn"))) > 0
		},
		check: func(t *testing.T, r *luaRun) {
			r.noLogLines()
			if r.access.Status != 101 {
				t.Errorf("access log: status %d, want 101", r.access.Status)
			}
			rv, ok := r.one("ngx_http_lua_socket_tcp_receive_retval_handler", "the websocket", byConn(r.run(), "conn"))
			if !ok {
				return
			}
			where := r.at("local head, err = sock:receive(2)")
			r.wantNum(rv, "status", 101)
			r.wantNum(rv, "ft_type", 5) // NGX_HTTP_LUA_SOCKET_FT_CLOSED | NGX_HTTP_LUA_SOCKET_FT_ERROR
			r.wantNum(rv, "client_eof", 1)
			r.wantNum(rv, "client_error", 0)
			r.wantStr(rv, "where", where)
			r.wantMessage(rv, fmt.Sprintf("*%d: the client closed the websocket; the Lua code was waiting at %s\n", r.conn, where))
			r.wantSuspended(rv)
			r.wantLua(rv, `\(a coroutine waiting to be resumed, not running: its frames\)`, luaReceivePattern,
				luaFrame("%s: in function 'recv_frame'", where),
				luaFrame("%s: in function 'serve'", r.at("local msg, err = recv_frame(sock)")),
				luaFrame("%s:1: in main chunk", r.chunk("content_by_lua_block")))
			r.wantFrames(rv, "ngx_http_lua_socket_tcp_receive_retval_handler", "ngx_http_lua_socket_tcp_read", "ngx_http_request_handler")
			if evs := r.all("ngx_http_lua_ffi_exit", nil); len(evs) != 0 {
				t.Errorf("the Lua side closed too, says the output:\n%s", r.dump())
			}
		},
	},
	{
		// A message over the limit: the Lua code sends a close frame and
		// drops the connection with ngx.exit(444).
		example: "lua-websocket-close", scenario: "lua-close", module: "chat.lua", source: luaExChat,
		server: chatServer,
		trigger: func(t *testing.T, r *luaRun) string {
			c, br := wsOpen(t, r.addr)
			wsSend(t, c, "hello")
			if op, msg := wsRecv(t, br); op != 0x1 || string(msg) != "echo: hello" {
				t.Fatalf("the echo: opcode %#x %q", op, msg)
			}
			wsSend(t, c, strings.Repeat("x", 100))
			if op, msg := wsRecv(t, br); op != 0x8 || !bytes.Equal(msg, []byte{0x03, 0xf1}) {
				t.Errorf("after a big message: opcode %#x %q, want a close frame with 1009", op, msg)
			}
			if rest, err := io.ReadAll(br); len(rest) != 0 || err != nil {
				t.Errorf("after the close frame: %q, %v; want the connection closed", rest, err)
			}
			return "GET /chat HTTP/1.1"
		},
		ready: func(r *luaRun) bool {
			return len(r.all("ngx_http_lua_ffi_exit", byConn(r.run(), "conn"))) > 0
		},
		check: func(t *testing.T, r *luaRun) {
			r.noLogLines()
			if r.access.Status != 101 {
				t.Errorf("access log: status %d, want 101", r.access.Status)
			}
			exit, ok := r.one("ngx_http_lua_ffi_exit", "the websocket", byConn(r.run(), "conn"))
			if !ok {
				return
			}
			where := r.at("ngx.exit(444)")
			r.wantNum(exit, "exit", 444)
			r.wantNum(exit, "client_eof", 0)
			r.wantNum(exit, "client_error", 0)
			r.wantStr(exit, "where", where)
			r.wantMessage(exit, fmt.Sprintf("*%d: the Lua code closed the websocket: ngx.exit(444) at %s\n", r.conn, where))
			r.wantLua(exit, luaExitPatternsThen(
				luaFrame("%s: in function 'serve'", where),
				luaFrame("%s:1: in main chunk", r.chunk("content_by_lua_block")))...)
			r.wantFrames(exit, "ngx_http_lua_ffi_exit", "ngx_http_lua_run_thread", "ngx_http_lua_socket_tcp_read", "ngx_http_request_handler")
			if evs := r.all("ngx_http_lua_socket_tcp_receive_retval_handler", nil); len(evs) != 0 {
				t.Errorf("the client closed too, says the output:\n%s", r.dump())
			}
		},
	},
}

// run is the exRun, for byConn.
func (r *luaRun) run() *exRun { return &r.exRun }

// chatServer is lua-websocket-close's server{} block.
func chatServer(r *luaRun) string {
	return fmt.Sprintf(`
    server {
        listen %s;
        location = /chat {
            content_by_lua_block { require("chat").serve() }
        }
    }`, r.addr)
}

// TestLuaExampleScenarios runs each lua-* example script, with ngxprobe
// run -p MASTER -o json, against its scenario on the packaged nginx with
// lua-nginx-module, and checks what it printed: the Lua file:line and
// function (from the lines of the Lua module), the *N of nginx's logs,
// the status, the side that closed; and that the traffic the example
// leaves out hits its probes not at all, or only in the kernel.
func TestLuaExampleScenarios(t *testing.T) {
	nginxtest.RequireRoot(t)
	b := nginxtest.BuildOpenResty(t)
	nginxtest.InstallOpenResty(t, b)
	t.Run("check", checkLuaExamples)
	for _, c := range luaExampleCases {
		t.Run(c.example+"/"+c.scenario, func(t *testing.T) { runLuaExampleCase(t, c) })
	}
}

// checkLuaExamples: each lua-* example resolves against the OpenResty
// nginx, with -p and with --binary --module; with --binary alone (no
// lua-nginx-module) check fails on the Lua functions. Each README shows
// the Lua module the scenarios run.
func checkLuaExamples(t *testing.T) {
	srv := nginxtest.StartPackaged(t, nginxtest.LuaConfig(nginxtest.Config{HTTP: plainServer(nginxtest.FreePort(t), "")}))
	master := strconv.Itoa(srv.MasterPID())
	luaModule := filepath.Join(nginxtest.PackagedModulesDir, nginxtest.LuaModule+".so")
	sources := map[string]string{}
	for _, c := range luaExampleCases {
		sources[c.example] = c.source
	}
	for _, name := range luaExampleNames {
		t.Run(name, func(t *testing.T) {
			script := exampleScript(t, name)
			for _, args := range [][]string{
				{"check", "-p", master, script},
				{"check", "--binary", nginxtest.PackagedBinary, "--module", luaModule, script},
			} {
				p := runProbe(t, ngx(args...)...)
				checkNoPanic(t, p)
				if code := p.exitCode(); code != 0 || !strings.Contains(p.stdout.String(), ": ok against "+nginxtest.PackagedBinary) {
					t.Errorf("exit %d, want 0 and ok: %s", code, p)
				}
			}
			// Without the module, the Lua functions are not in nginx.
			p := runProbe(t, ngx("check", "--binary", nginxtest.PackagedBinary, script)...)
			checkNoPanic(t, p)
			stderr := p.stderr.String()
			if code := p.exitCode(); code != 1 || !strings.Contains(stderr, `function not found: "ngx_http_lua_`) && !strings.Contains(stderr, "lua-nginx-module") {
				t.Errorf("check without lua-nginx-module: exit %d, want 1 and the Lua functions not found: %s", code, p)
			}
			t.Logf("check --binary %s without --module:\n%s", nginxtest.PackagedBinary, stderr)

			// The README shows the Lua module the scenario runs.
			readme, err := os.ReadFile(filepath.Join(filepath.Dir(script), "README.md"))
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := luaBlock(string(readme)); !ok || got != sources[name] {
				t.Errorf("README.md's first lua block differs from the scenario's Lua module:\n%s\nwant\n%s", got, sources[name])
			}
		})
	}
}

// luaBlock is the text of the first ```lua block of a README.
func luaBlock(readme string) (string, bool) {
	_, after, ok := strings.Cut(readme, "```lua\n")
	if !ok {
		return "", false
	}
	block, _, ok := strings.Cut(after, "```\n")
	return block, ok
}

func runLuaExampleCase(t *testing.T, c luaExampleCase) {
	start := time.Now()
	dir, err := os.MkdirTemp("", "ngxp-lua-") // short: LuaJIT cuts chunk names past 60 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, c.module), []byte(c.source), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &luaRun{c: c, dir: dir}
	r.t = t
	if c.backend != nil {
		r.backend = c.backend(t)
	}
	port, plain := nginxtest.FreePort(t), nginxtest.FreePort(t)
	r.addr, r.plain = fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", plain)
	httpConf := fmt.Sprintf("    init_by_lua_block { package.path = %q .. package.path }\n", dir+"/?.lua;") + c.server(r) + plainServer(plain, "")
	r.srv = nginxtest.StartPackaged(t, nginxtest.LuaConfig(nginxtest.Config{HTTP: httpConf}))
	conf, err := os.ReadFile(filepath.Join(r.srv.Dir(), "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	r.conf = string(conf)
	for range exampleWarmups {
		checkServes(t, "http://"+r.plain)
	}

	r.p = startProbe(t, "run", "-p", strconv.Itoa(r.srv.MasterPID()), "-o", "json", exampleScript(t, c.example))
	if !strings.Contains(r.p.stderr.String(), "ngxprobe: stacks show Lua frames: ") {
		t.Fatalf("ngxprobe reads no Lua frames (is libluajit2-5.1-2-dbgsym installed?): %s", r.p)
	}
	request := c.trigger(t, r)
	if c.healthy != nil {
		c.healthy(t, r)
	}

	// The incident's access-log entry (written when the request ends) and
	// error-log lines, then (bounded) the diagnostic events.
	found := waitUntil(eventTimeout, func() bool {
		for _, e := range r.srv.AccessEntries() {
			if e.Request == request {
				r.access = e
				return true
			}
		}
		return false
	})
	if !found {
		t.Fatalf("no access-log entry for %q:\n%s", request, r.srv.AccessLog())
	}
	r.conn = int64(r.access.Connection)
	t.Logf("access log: $connection %d $status %d $body_bytes_sent %d %q", r.access.Connection, r.access.Status, r.access.BodyBytesSent, r.access.Request)
	if r.conn <= exampleWarmups {
		t.Errorf("the incident's connection is *%d; after %d warm-up requests it should be later", r.conn, exampleWarmups)
	}
	ready := waitUntil(eventTimeout, func() bool {
		r.evs = exEvents(t, r.p)
		return c.ready(r) || r.p.exited()
	}) && c.ready(r)
	stopProbeOK(t, r.p)
	r.evs = exEvents(t, r.p)
	if !ready {
		t.Fatalf("the diagnostic events for *%d are not out after %v:\n%s\n%s", r.conn, eventTimeout, r.dump(), r.p)
	}
	for _, l := range incidents.ParseErrorLog(r.srv.ErrorLog()) {
		if int64(l.Conn) == r.conn {
			r.lines = append(r.lines, l)
			t.Logf("error log: %s", l.Raw)
		}
	}
	r.sum = checkSummary(t, r.p)
	workers := r.srv.WorkerPIDs()
	for _, ev := range r.evs {
		if !pidIn(ev.PID, workers) {
			t.Errorf("event from pid %d, not a worker of nginx %d (workers %v): %s", ev.PID, r.srv.MasterPID(), workers, ev)
		}
	}
	c.check(t, r)
	if t.Failed() {
		t.Logf("events:\n%s", r.dump())
	}
	t.Logf("%s %s: wall %v", c.example, c.scenario, time.Since(start).Round(time.Millisecond))
}

// exchange sends req on a new connection to addr and returns all that
// comes back until the server closes the connection (bounded).
func exchange(t testing.TB, addr, req string) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("send %q: %v", req, err)
	}
	data, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the answer to %q: %v (after %q)", req, err, data)
	}
	return data
}

// exchangeHTTP is exchange for a request whose answer is an HTTP
// response: its status and body.
func exchangeHTTP(t testing.TB, addr, req string) (int, string) {
	t.Helper()
	data := exchange(t, addr, req)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
	if err != nil {
		t.Fatalf("the answer to %q: %v: %q", req, err, data)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the answer to %q: %v: %q", req, err, data)
	}
	return resp.StatusCode, string(body)
}

// quoteBackend is lua-cosocket-reset's quote service: it answers each
// "PRICE SYMBOL" line with "PRICE SYMBOL 12.50", except "PRICE ACME": a
// moment later, it resets the connection (SO_LINGER 0).
func quoteBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c *net.TCPConn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					symbol := strings.TrimSuffix(strings.TrimPrefix(line, "PRICE "), "\n")
					if symbol == "ACME" {
						// The Lua code waits in sock:receive() by now.
						time.Sleep(100 * time.Millisecond)
						_ = c.SetLinger(0)
						return
					}
					if _, err := fmt.Fprintf(c, "PRICE %s 12.50\n", symbol); err != nil {
						return
					}
				}
			}(c.(*net.TCPConn))
		}
	}()
	return ln.Addr().String()
}

// wsOpen opens a websocket on /chat of addr: the handshake, and the 101
// with the right Sec-WebSocket-Accept. t.Cleanup closes it.
func wsOpen(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	key := base64.StdEncoding.EncodeToString(nonce)
	if _, err := fmt.Fprintf(c, "GET /chat HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the handshake's answer: %v", err)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if accept := base64.StdEncoding.EncodeToString(sum[:]); resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != accept {
		t.Fatalf("the handshake's answer: %s, Sec-WebSocket-Accept %q; want 101 and %q", resp.Status, resp.Header.Get("Sec-WebSocket-Accept"), accept)
	}
	return c, br
}

// wsSend sends a masked text frame (under 126 bytes), as a client must.
func wsSend(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	mask := []byte{0x5a, 0x17, 0xc3, 0x08}
	frame := append([]byte{0x81, 0x80 | byte(len(msg))}, mask...)
	for i := range len(msg) {
		frame = append(frame, msg[i]^mask[i%4])
	}
	if _, err := c.Write(frame); err != nil {
		t.Fatalf("send a frame: %v", err)
	}
}

// wsRecv reads a server frame (unmasked, under 126 bytes): its opcode
// and payload.
func wsRecv(t *testing.T, br *bufio.Reader) (byte, []byte) {
	t.Helper()
	head := make([]byte, 2)
	if _, err := io.ReadFull(br, head); err != nil {
		t.Fatalf("read a frame: %v", err)
	}
	payload := make([]byte, head[1]&0x7f)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatalf("read a frame's payload: %v", err)
	}
	return head[0] & 0x0f, payload
}
