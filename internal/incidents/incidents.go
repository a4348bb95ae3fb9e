package incidents

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// The client address the PROXY protocol header of the wss scenarios
// announces; nginx (real_ip_header proxy_protocol) logs it as "client:".
const (
	FakeClientIP   = "203.0.113.7"
	FakeClientPort = 51234
)

// Timing of the scenarios.
const (
	// WSSUpstreamDelay is how long the wss-half-close upstream waits
	// before its 101, unless nginx closes the connection first.
	WSSUpstreamDelay = 2 * time.Second
	// WSSBackendCloseDelay is how long the wss-backend-close upstream
	// keeps the upgraded connection open after its 101.
	WSSBackendCloseDelay = 200 * time.Millisecond
	// SlowUpstreamDelay is how long the client-abort-499 upstream waits
	// before answering; the client gives up after ClientTimeout.
	SlowUpstreamDelay = 3 * time.Second
	ClientTimeout     = 1 * time.Second
	// upstreamWait bounds how long Trigger waits for the upstream's side
	// after the client is done.
	upstreamWait = 3 * time.Second
)

// Scenario is one incident, ready to run: its upstream is listening (until
// the test's cleanup) and HTTP holds the nginx configuration that proxies to
// it. Start nginx with Config{HTTP: s.HTTP} (several scenarios' HTTP may be
// concatenated into one nginx), then call Trigger, as often as needed.
type Scenario struct {
	// Name is short and stable, e.g. "wss-half-close".
	Name string
	// HTTP is the server{} block for nginxtest.Config.HTTP.
	HTTP string
	// Addr is the "127.0.0.1:port" nginx listens on for this scenario.
	Addr string
	// Upstream is the "127.0.0.1:port" of the scenario's upstream server.
	Upstream string
	// TLS: the listener is "ssl"; CertFile and KeyFile are its
	// self-signed ECDSA P-256 certificate and key.
	TLS               bool
	CertFile, KeyFile string
	// ProxyClient is the client "ip:port" the PROXY protocol v1 header
	// announces ("" when the listener has no proxy_protocol).
	ProxyClient string

	// ExpectLevel and ExpectLog are the error-log level and message (the
	// text between "*N " and ", client: ") that prove the incident; both
	// are "" when nginx logs nothing for it (wss-backend-close).
	ExpectLevel string
	ExpectLog   string
	// ExpectStatus is the access log's $status of the request.
	ExpectStatus int

	up     *upstream
	prefix string // request path prefix; Trigger appends a sequence number
	seq    atomic.Int64
	run    func(s *Scenario, path string) (Result, error)
}

// Trigger runs the scenario's client once against nginx and returns what
// it observed, plus what the upstream saw of the request. Each call uses a
// new request path (Result.Request). It takes at most about 15 s; a client
// that can't even connect, handshake or send fails the test.
func (s *Scenario) Trigger(t testing.TB) Result {
	t.Helper()
	path := s.prefix + "/" + strconv.FormatInt(s.seq.Add(1), 10)
	start := time.Now()
	res, err := s.run(s, path)
	res.Elapsed = time.Since(start)
	if err != nil {
		t.Fatalf("incidents: %s: %s: %v", s.Name, res.Request, err)
	}
	res.Upstream, res.UpstreamDone = s.up.wait(path, upstreamWait)
	return res
}

// Constructor is a scenario's name and constructor.
type Constructor struct {
	Name string
	New  func(testing.TB) *Scenario
}

// All returns the constructors of every scenario, in a fixed order, for
// table-driven tests.
func All() []Constructor {
	return []Constructor{
		{"wss-half-close", WSSHalfClose},
		{"wss-backend-close", WSSBackendClose},
		{"client-abort-499", ClientAbort499},
		{"reset-by-peer", ResetByPeer},
		{"upstream-mid-body", UpstreamMidBody},
		{"upstream-before-header", UpstreamBeforeHeader},
	}
}

// Responses of the upstreams.
const (
	switchingProtocols = "HTTP/1.1 101 Switching Protocols\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
	slowAnswer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n" +
		"Connection: close\r\n\r\nslow upstream\n"
	okAnswer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n" +
		"Connection: close\r\n\r\nok\n"
	// midBodyAnswer promises 1000 body bytes and sends 10.
	midBodyAnswer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n" +
		"Connection: close\r\n\r\n0123456789"
)

// ResetExtra is what the reset-by-peer client sends after its 10-byte body:
// 20 bytes nginx never reads as a request, which make it close lingeringly.
const ResetExtra = "extra-unread-bytes\r\n"

// WSSHalfClose: a websocket Upgrade through PROXY protocol and TLS, whose
// client half-closes (close_notify, then shutdown(SHUT_WR)) once the
// upstream has the request; the upstream would answer 101 only after
// WSSUpstreamDelay. nginx notices the client's FIN (EPOLLRDHUP), logs at
// info, closes the upstream connection (FIN) and the client connection,
// and logs $status 499. The action is "sending request to upstream": nginx
// sets "reading response header from upstream" only once the upstream has
// sent something. nginx closes the client connection without reading the
// close_notify, so its kernel sends the client an RST, not a FIN
// (Result.Reset; TcpExtTCPAbortOnClose counts it).
func WSSHalfClose(t testing.TB) *Scenario {
	t.Helper()
	s := newWSS(t, "wss-half-close", delayedAnswer(WSSUpstreamDelay, switchingProtocols))
	s.run = func(s *Scenario, path string) (Result, error) { return s.wssClient(path, true) }
	s.ExpectLevel = "info"
	s.ExpectLog = "epoll_wait() reported that client prematurely closed connection, " +
		"so upstream connection is closed too while sending request to upstream"
	s.ExpectStatus = 499
	return s
}

// WSSBackendClose: a websocket Upgrade through PROXY protocol and TLS; the
// upstream answers 101 and closes the upgraded connection
// WSSBackendCloseDelay later. nginx closes the client connection
// (close_notify and FIN) and logs nothing at info; $status is 101.
func WSSBackendClose(t testing.TB) *Scenario {
	t.Helper()
	s := newWSS(t, "wss-backend-close", func(c net.Conn, br *bufio.Reader, res *UpstreamResult) {
		write(c, res, switchingProtocols)
		waitNginxClose(c, br, WSSBackendCloseDelay, res)
	})
	s.run = func(s *Scenario, path string) (Result, error) { return s.wssClient(path, false) }
	s.ExpectStatus = 101
	return s
}

// ClientAbort499: a plain proxied GET to an upstream that would answer
// after SlowUpstreamDelay; the client gives up after ClientTimeout and
// closes (FIN). nginx logs at info ("while sending request to upstream",
// as the upstream has sent nothing yet), closes the upstream connection
// and logs $status 499.
func ClientAbort499(t testing.TB) *Scenario {
	t.Helper()
	s := newPlain(t, "client-abort-499", delayedAnswer(SlowUpstreamDelay, slowAnswer))
	s.run = func(s *Scenario, path string) (Result, error) {
		res := Result{Request: "GET " + path + " HTTP/1.1"}
		c, err := dial(s.Addr)
		if err != nil {
			return res, err
		}
		defer c.Close()
		if _, err := io.WriteString(c, getRequest(path)); err != nil {
			return res, err
		}
		_ = c.SetReadDeadline(time.Now().Add(ClientTimeout))
		res.fill(readUntilClose(c))
		return res, nil
	}
	s.ExpectLevel = "info"
	s.ExpectLog = "epoll_wait() reported that client prematurely closed connection, " +
		"so upstream connection is closed too while sending request to upstream"
	s.ExpectStatus = 499
	return s
}

// ResetByPeer: a proxied POST with "Connection: close", a 10-byte body and
// ResetExtra after it, in one write. The upstream answers 200. nginx sends
// the response, shuts its side down and, because of the unread extra
// bytes, waits in lingering close; the client reads the whole response up
// to nginx's FIN and closes with SO_LINGER {1, 0}: an RST, which nginx's
// lingering-close recv() gets. nginx logs it at info; $status is 200.
func ResetByPeer(t testing.TB) *Scenario {
	t.Helper()
	s := newPlain(t, "reset-by-peer", func(c net.Conn, br *bufio.Reader, res *UpstreamResult) {
		write(c, res, okAnswer)
	})
	s.run = func(s *Scenario, path string) (Result, error) {
		res := Result{Request: "POST " + path + " HTTP/1.1"}
		c, err := dial(s.Addr)
		if err != nil {
			return res, err
		}
		defer c.Close()
		req := "POST " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" +
			"Content-Type: text/plain\r\nContent-Length: 10\r\n\r\n0123456789" + ResetExtra
		if _, err := io.WriteString(c, req); err != nil {
			return res, err
		}
		_ = c.SetReadDeadline(time.Now().Add(readTimeout))
		res.fill(readUntilClose(c))
		if err := c.SetLinger(0); err != nil {
			return res, err
		}
		return res, nil // the deferred Close sends the RST
	}
	s.ExpectLevel = "info"
	s.ExpectLog = "recv() failed (104: Connection reset by peer) while sending to client"
	s.ExpectStatus = 200
	return s
}

// UpstreamMidBody: the upstream answers 200 with "Content-Length: 1000",
// sends 10 body bytes and closes. nginx logs at error level and closes the
// client connection after those 10 bytes; $status is 200.
func UpstreamMidBody(t testing.TB) *Scenario {
	t.Helper()
	s := newPlain(t, "upstream-mid-body", func(c net.Conn, br *bufio.Reader, res *UpstreamResult) {
		write(c, res, midBodyAnswer)
	})
	s.run = (*Scenario).getClient
	s.ExpectLevel = "error"
	s.ExpectLog = "upstream prematurely closed connection while reading upstream"
	s.ExpectStatus = 200
	return s
}

// UpstreamBeforeHeader: the upstream reads the request and closes without
// answering. nginx logs at error level and answers 502.
//
// The upstream reads the request first: one that closes right on accept
// leaves nginx's request unread, and its kernel answers with an RST, so
// nginx may log "recv() failed (104: Connection reset by peer)" or a
// writev() error instead.
func UpstreamBeforeHeader(t testing.TB) *Scenario {
	t.Helper()
	s := newPlain(t, "upstream-before-header", func(net.Conn, *bufio.Reader, *UpstreamResult) {})
	s.run = (*Scenario).getClient
	s.ExpectLevel = "error"
	s.ExpectLog = "upstream prematurely closed connection while reading response header from upstream"
	s.ExpectStatus = 502
	return s
}

// getRequest is a GET for path that asks nginx to close afterwards.
func getRequest(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
}

// getClient sends a GET and reads until nginx closes the connection.
func (s *Scenario) getClient(path string) (Result, error) {
	res := Result{Request: "GET " + path + " HTTP/1.1"}
	c, err := dial(s.Addr)
	if err != nil {
		return res, err
	}
	defer c.Close()
	if _, err := io.WriteString(c, getRequest(path)); err != nil {
		return res, err
	}
	_ = c.SetReadDeadline(time.Now().Add(readTimeout))
	res.fill(readUntilClose(c))
	return res, nil
}

// newPlain is a scenario with a plain HTTP listener proxying to a new
// upstream that runs h.
func newPlain(t testing.TB, name string, h handler) *Scenario {
	t.Helper()
	up := startUpstream(t, h)
	port := nginxtest.FreePort(t)
	s := &Scenario{
		Name:     name,
		Addr:     fmt.Sprintf("127.0.0.1:%d", port),
		Upstream: up.Addr(),
		up:       up,
		prefix:   "/" + name,
	}
	s.HTTP = fmt.Sprintf(`
    # incidents: %s
    server {
        listen %s;
        location / {
            proxy_pass http://%s;
        }
    }
`, name, s.Addr, s.Upstream)
	return s
}

// newWSS is a scenario with a TLS + PROXY protocol listener proxying
// websocket upgrades to a new upstream that runs h.
func newWSS(t testing.TB, name string, h handler) *Scenario {
	t.Helper()
	up := startUpstream(t, h)
	port := nginxtest.FreePort(t)
	cert, key := writeSelfSignedCert(t)
	s := &Scenario{
		Name:        name,
		Addr:        fmt.Sprintf("127.0.0.1:%d", port),
		Upstream:    up.Addr(),
		TLS:         true,
		CertFile:    cert,
		KeyFile:     key,
		ProxyClient: fmt.Sprintf("%s:%d", FakeClientIP, FakeClientPort),
		up:          up,
		prefix:      "/ws/" + name,
	}
	s.HTTP = fmt.Sprintf(`
    # incidents: %s
    server {
        listen %s ssl proxy_protocol;
        ssl_certificate %q;
        ssl_certificate_key %q;
        set_real_ip_from 127.0.0.1;
        real_ip_header proxy_protocol;
        location /ws/ {
            proxy_pass http://%s;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
        }
    }
`, name, s.Addr, cert, key, s.Upstream)
	return s
}

// wssClient connects, sends the PROXY header, handshakes TLS and sends the
// Upgrade request for path. With halfClose it then waits for the upstream
// to have the request and half-closes (close_notify, then FIN). It reads
// until nginx closes the connection.
func (s *Scenario) wssClient(path string, halfClose bool) (Result, error) {
	res := Result{Request: "GET " + path + " HTTP/1.1"}
	raw, err := dial(s.Addr)
	if err != nil {
		return res, err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := fmt.Fprintf(raw, "PROXY TCP4 %s 127.0.0.1 %d %d\r\n",
		FakeClientIP, FakeClientPort, raw.RemoteAddr().(*net.TCPAddr).Port); err != nil {
		return res, err
	}
	obs := &rawObserver{Conn: raw}
	tc := tls.Client(obs, tlsClientConfig())
	if err := handshake(tc); err != nil {
		return res, fmt.Errorf("TLS handshake: %w", err)
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n" +
		"Upgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(tc, req); err != nil {
		return res, err
	}
	_ = raw.SetDeadline(time.Now().Add(readTimeout))
	if halfClose {
		// nginx only notices a client's FIN while it waits on the
		// upstream: before that its read handler isn't armed for it.
		if !s.up.waitGot(path, readTimeout) {
			return res, fmt.Errorf("the upstream never got the request")
		}
		if err := tc.CloseWrite(); err != nil { // close_notify
			return res, fmt.Errorf("close_notify: %w", err)
		}
		if err := raw.CloseWrite(); err != nil { // FIN
			return res, fmt.Errorf("shutdown: %w", err)
		}
	}
	data, err := readUntilClose(tc)
	res.fillTLS(data, err, raw, obs)
	return res, nil
}
