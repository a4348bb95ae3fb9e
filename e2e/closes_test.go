package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ngxprobe/ngxprobe/closes"
	"github.com/ngxprobe/ngxprobe/internal/incidents"
	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/otelcoltest"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// Verdict is one line of ngxprobe closes -o json.
type Verdict struct {
	Time      string `json:"time"`
	Conn      uint64 `json:"conn"`
	PeerConn  uint64 `json:"peer_conn"`
	Side      string `json:"side"`
	Peer      string `json:"peer"`
	Initiator string `json:"initiator"`
	Cause     string `json:"cause"`
	Phase     string `json:"phase"`
	Method    string `json:"method"`
	URI       string `json:"uri"`
	Status    int    `json:"status"`
	Errno     int    `json:"errno"`
	ErrorLog  string `json:"error_log"`
	Summary   string `json:"summary"`
	Healthy   bool   `json:"healthy"`
	DecidedAt *struct {
		Symbol string `json:"symbol"`
		File   string `json:"file"`
		Line   int    `json:"line"`
	} `json:"decided_at"`
	Via   string `json:"via"`
	Nginx *struct {
		MasterPID int `json:"master_pid"`
	} `json:"nginx"`
}

// ClosesCount is the {"closes": ...} line closes prints at exit.
type ClosesCount struct {
	Final    bool              `json:"final"`
	Verdicts uint64            `json:"verdicts"`
	Healthy  map[string]uint64 `json:"healthy"`
	Lost     uint64            `json:"lost"`
}

// closesOutput parses closes' JSON lines: verdicts and the final counts.
func closesOutput(t testing.TB, p *proc) ([]Verdict, *ClosesCount) {
	t.Helper()
	vs, _, final := closesLines(t, p)
	return vs, final
}

// closesLines parses closes' JSON lines: verdicts, the periodic
// (--interval) counts and the final ones.
func closesLines(t testing.TB, p *proc) ([]Verdict, []ClosesCount, *ClosesCount) {
	t.Helper()
	var vs []Verdict
	var intervals []ClosesCount
	var final *ClosesCount
	sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
	sc.Buffer(make([]byte, 1<<20), 8<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("closes printed a line that is not JSON: %v\n%s", err, line)
		}
		switch {
		case m["verdict"] != nil:
			var v Verdict
			if err := json.Unmarshal(m["verdict"], &v); err != nil {
				t.Fatalf("verdict: %v\n%s", err, line)
			}
			vs = append(vs, v)
		case m["closes"] != nil:
			var c ClosesCount
			if err := json.Unmarshal(m["closes"], &c); err != nil {
				t.Fatalf("closes: %v\n%s", err, line)
			}
			if c.Final {
				final = &c
			} else {
				intervals = append(intervals, c)
			}
		default:
			t.Fatalf("closes printed an unexpected line: %s", line)
		}
	}
	return vs, intervals, final
}

// healthyVerdicts splits closes --all's verdicts: the healthy ones
// counted by kind, and the abnormal ones.
func healthyVerdicts(vs []Verdict) (map[string]uint64, []Verdict) {
	healthy := map[string]uint64{}
	var abnormal []Verdict
	for _, v := range vs {
		if v.Healthy {
			healthy[v.Cause]++
		} else {
			abnormal = append(abnormal, v)
		}
	}
	return healthy, abnormal
}

// closeUpstream is a scripted upstream: it reads one request header, then
// does what act says.
func closeUpstream(t testing.TB, act func(c *net.TCPConn)) string {
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
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				act(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().String()
}

// fullBacklog is a listener that never accepts, its backlog filled: a
// connect to it times out (proxy_connect_timeout), on loopback.
func fullBacklog(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Backlog 0 holds one connection; the SYNs after it are dropped.
	for range 3 {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		if c, err := d.Dial("tcp", addr); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return addr
}

// sendAndWait sends text on a new connection and reads until nginx closes
// it or the deadline passes; before runs after the write.
func sendAndWait(t testing.TB, addr, text string, wait time.Duration) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, text); err != nil {
		t.Fatalf("write: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, _ = io.Copy(io.Discard, c)
}

// closeCase is one cause of the matrix: what to drive, what nginx logs
// for it, and the verdict closes must print.
type closeCase struct {
	name string
	// run drives the clients; it returns the request line the access log
	// shows, or "" when nginx logs no request (the *N then comes from the
	// error-log line holding logText).
	run       func(t testing.TB) string
	logText   string
	initiator string
	cause     string
	phase     string
	// upstreamNext: the verdict names the upstream connection nginx
	// opened for the request, *N+1 (nginx numbers connections from one
	// counter, and the matrix opens one at a time on one worker).
	upstreamNext bool
}

func TestClosesMatrix(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) { testClosesMatrix(t, nginxtest.Build(t, variant), variant == nginxtest.VariantO2) })
	}
}

// testClosesMatrix drives every case; with otlp, a second closes exports
// to a real Collector, and each verdict must arrive there too.
func testClosesMatrix(t *testing.T, inst nginxtest.Install, otlp bool) {
	docroot := t.TempDir()
	if err := os.WriteFile(filepath.Join(docroot, "big.bin"), make([]byte, 64<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(docroot, "small.txt"), []byte("ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(docroot, 0o755); err != nil {
		t.Fatal(err)
	}
	cert, key := incidents.SelfSignedCert(t)
	upFin := closeUpstream(t, func(c *net.TCPConn) {})
	upMid := closeUpstream(t, func(c *net.TCPConn) {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n0123456789")
	})
	upRst := closeUpstream(t, func(c *net.TCPConn) { _ = c.SetLinger(0) })
	upSlow := closeUpstream(t, func(c *net.TCPConn) {
		_ = c.SetReadDeadline(time.Now().Add(4 * time.Second))
		_, _ = io.Copy(io.Discard, c)
	})
	// Websocket backends: one closes the tunnel (FIN) soon after the
	// upgrade, the other keeps it open until nginx closes it.
	const switching = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
	wsClosing := closeUpstream(t, func(c *net.TCPConn) {
		_, _ = io.WriteString(c, switching)
		time.Sleep(200 * time.Millisecond)
	})
	wsOpen := closeUpstream(t, func(c *net.TCPConn) {
		_, _ = io.WriteString(c, switching)
		_, _ = io.Copy(io.Discard, c)
	})
	upOK := closeUpstream(t, func(c *net.TCPConn) {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
	})
	streamUp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { streamUp.Close() })
	go func() {
		for {
			c, err := streamUp.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 5)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.ReadFull(c, buf)
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}()
	blackhole := fullBacklog(t)

	port, tlsPort, streamPort := nginxtest.FreePort(t), nginxtest.FreePort(t), nginxtest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	streamAddr := fmt.Sprintf("127.0.0.1:%d", streamPort)
	httpConf := fmt.Sprintf(`
    limit_req_zone $binary_remote_addr zone=closes_one:1m rate=1r/m;
    server {
        listen %s;
        client_header_timeout 1s;
        client_body_timeout 1s;
        send_timeout 1s;
        keepalive_timeout 1s;
        proxy_connect_timeout 1s;
        proxy_read_timeout 1s;
        location / { return 200 "ok\n"; }
        location = /c444 { return 444; }
        location = /limited { limit_req zone=closes_one nodelay; alias %s/small.txt; }
        location /big/ { alias %s/; }
        location = /body { proxy_pass http://%s; }
        location = /fin-before { proxy_pass http://%s; }
        location = /fin-mid { proxy_pass http://%s; }
        location = /rst { proxy_pass http://%s; }
        location = /connect-timeout { proxy_pass http://%s; }
        location = /read-timeout { proxy_pass http://%s; }
        location = /wait { proxy_pass http://%s; }
        location /ws- {
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            location = /ws-backend-close { proxy_pass http://%s; }
            location = /ws-client-close { proxy_pass http://%s; }
        }
    }
    server {
        listen %s ssl http2;
        ssl_certificate %s;
        ssl_certificate_key %s;
        location /big/ { alias %s/; }
    }`, addr, docroot, docroot, upOK, upFin, upMid, upRst, blackhole, upSlow, upSlow, wsClosing, wsOpen, tlsAddr, cert, key, docroot)
	streamConf := fmt.Sprintf(`
    server { listen %s; proxy_pass %s; }`, streamAddr, streamUp.Addr())
	srv := nginxtest.Start(t, inst, nginxtest.Config{HTTP: httpConf, Stream: streamConf})

	cases := []closeCase{
		{name: "client FIN while waiting for upstream (499)", initiator: "client", cause: "fin", phase: "waiting_upstream", upstreamNext: true,
			run: func(t testing.TB) string {
				sendAndWait(t, addr, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n", 300*time.Millisecond)
				return "GET /wait HTTP/1.1"
			}},
		{name: "client RST after the response", initiator: "client", cause: "rst", phase: "keepalive_idle",
			run: func(t testing.TB) string {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.WriteString(c, "GET /client-rst HTTP/1.1\r\nHost: x\r\n\r\n")
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				_ = c.(*net.TCPConn).SetLinger(0)
				c.Close()
				return "GET /client-rst HTTP/1.1"
			}},
		{name: "client_header_timeout", initiator: "client", cause: "timeout", phase: "request_header",
			run: func(t testing.TB) string {
				sendAndWait(t, addr, "GET /slow-header HTTP/1.1\r\nHost: x\r\n", 3*time.Second)
				return "GET /slow-header HTTP/1.1"
			}},
		{name: "client_body_timeout", initiator: "client", cause: "timeout", phase: "request_body",
			run: func(t testing.TB) string {
				sendAndWait(t, addr, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789", 3*time.Second)
				return "POST /body HTTP/1.1"
			}},
		{name: "send_timeout", initiator: "client", cause: "timeout", phase: "response",
			run: func(t testing.TB) string {
				d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
					return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
				}}
				c, err := d.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_, _ = io.WriteString(c, "GET /big/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
				time.Sleep(3 * time.Second) // never read: nginx's send times out
				return "GET /big/big.bin HTTP/1.1"
			}},
		{name: "upstream FIN before the header (502)", initiator: "upstream", cause: "fin", phase: "upstream_header",
			run: func(t testing.TB) string {
				sendAndWait(t, addr, "GET /fin-before HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3*time.Second)
				return "GET /fin-before HTTP/1.1"
			}},
		{name: "upstream FIN mid-body", initiator: "upstream", cause: "fin", phase: "upstream_body",
			run: func(t testing.TB) string {
				sendAndWait(t, addr, "GET /fin-mid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3*time.Second)
				return "GET /fin-mid HTTP/1.1"
			}},
		{name: "upstream RST", initiator: "upstream", cause: "rst", phase: "upstream_header",
			run: func(t testing.TB) string {
				sendAndWait(t, addr, "GET /rst HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3*time.Second)
				return "GET /rst HTTP/1.1"
			}},
		{name: "proxy_connect_timeout", initiator: "upstream", cause: "timeout", phase: "upstream_connect",
			run: func(t testing.TB) string {
				sendAndWait(t, addr, "GET /connect-timeout HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 4*time.Second)
				return "GET /connect-timeout HTTP/1.1"
			}},
		{name: "proxy_read_timeout (504)", initiator: "upstream", cause: "timeout", phase: "upstream_header",
			run: func(t testing.TB) string {
				sendAndWait(t, addr, "GET /read-timeout HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 4*time.Second)
				return "GET /read-timeout HTTP/1.1"
			}},
		{name: "websocket backend close", initiator: "upstream", cause: "fin", phase: "tunnel",
			run: func(t testing.TB) string {
				sendAndWait(t, addr, wsUpgrade("/ws-backend-close"), 3*time.Second)
				return "GET /ws-backend-close HTTP/1.1 101"
			}},
		{name: "return 444", initiator: "nginx", cause: "return_444",
			run: func(t testing.TB) string {
				sendAndWait(t, addr, "GET /c444 HTTP/1.1\r\nHost: x\r\n\r\n", 3*time.Second)
				return "GET /c444 HTTP/1.1"
			}},
		{name: "limit_req", initiator: "nginx", cause: "limit_req",
			run: func(t testing.TB) string {
				sendAndWait(t, addr, "GET /limited HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3*time.Second)
				sendAndWait(t, addr, "GET /limited HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3*time.Second)
				return "GET /limited HTTP/1.1 503"
			}},
		{name: "TLS garbage", initiator: "client", cause: "tls", phase: "tls_handshake", logText: "SSL_do_handshake() failed",
			run: func(t testing.TB) string {
				sendAndWait(t, tlsAddr, "\x16\x03\x01\x00\x20"+strings.Repeat("garbage!", 4), 3*time.Second)
				return ""
			}},
		{name: "HTTP/2 RST_STREAM mid-response", initiator: "client", cause: "h2_rst_stream", phase: "http2",
			run: func(t testing.TB) string {
				tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
				// The connection lives on after its stream's reset; it
				// closes after the traces stop, so no trace's quiet period
				// decides whether its close joins the reset's verdict.
				t.Cleanup(tr.CloseIdleConnections)
				ctx, cancel := context.WithCancel(context.Background())
				req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+tlsAddr+"/big/big.bin", nil)
				resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				if resp.ProtoMajor != 2 {
					t.Fatalf("the client spoke %s, want HTTP/2", resp.Proto)
				}
				_, _ = io.CopyN(io.Discard, resp.Body, 256<<10)
				cancel() // RST_STREAM(CANCEL)
				resp.Body.Close()
				time.Sleep(500 * time.Millisecond)
				return "GET /big/big.bin HTTP/2.0"
			}},
		{name: "HTTP/2 GOAWAY with an error", initiator: "client", cause: "h2_goaway", phase: "http2",
			run: func(t testing.TB) string {
				h2Goaway(t, tlsAddr, "/big/small.txt", http2.ErrCodeProtocol)
				return "GET /big/small.txt HTTP/2.0"
			}},
		{name: "stream upstream RST", initiator: "upstream", cause: "rst", logText: "recv() failed (104: Connection reset by peer) while proxying and reading from upstream",
			run: func(t testing.TB) string {
				sendAndWait(t, streamAddr, "hello", 3*time.Second)
				return ""
			}},
	}

	p := startProbe(t, "closes", "-p", fmt.Sprint(srv.MasterPID()), "-o", "json")
	// Side by side: --all prints the healthy closes too, and the counts
	// every second; its counts must be the plain trace's.
	all := startProbe(t, "closes", "-p", fmt.Sprint(srv.MasterPID()), "--all", "--interval", "1s", "-o", "json")
	var col *otelcoltest.Collector
	var exporter *proc
	if otlp {
		col = otelcoltest.Start(t, otelcoltest.Options{})
		// With --all: the healthy closes arrive as INFO records, marked.
		exporter = startProbe(t, append([]string{"closes", "--all", "-p", fmt.Sprint(srv.MasterPID())}, otlpArgs(col)...)...)
	}
	var conns []uint64
	for _, c := range cases {
		request := c.run(t)
		conns = append(conns, awaitConn(t, srv, c.name, request, c.logText))
	}
	// A client that closes its websocket tunnel: how tunnels end, counted
	// healthy, no verdict.
	wc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(wc, wsUpgrade("/ws-client-close"))
	if resp, err := http.ReadResponse(bufio.NewReader(wc), nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("websocket upgrade: %v %v", resp, err)
	}
	time.Sleep(100 * time.Millisecond)
	wc.Close()
	wsConn := awaitConn(t, srv, "websocket client close", "GET /ws-client-close HTTP/1.1 101", "")
	// An HTTP/2 client that says goodbye (GOAWAY, NO_ERROR): healthy.
	h2Goaway(t, tlsAddr, "/big/small.txt?bye", http2.ErrCodeNo)
	byeConn := awaitConn(t, srv, "HTTP/2 GOAWAY without an error", "GET /big/small.txt?bye HTTP/2.0", "")
	// The keepalive_timeout case: healthy, counted, no verdict.
	kc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(kc, "GET /keepalive HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = kc.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, _ = io.Copy(io.Discard, kc) // until nginx closes it after keepalive_timeout
	kc.Close()
	keepaliveConn := awaitConn(t, srv, "keepalive_timeout", "GET /keepalive HTTP/1.1", "")
	time.Sleep(500 * time.Millisecond) // past the engine's quiet period
	stopProbeOK(t, p)
	stopProbeOK(t, all)
	if exporter != nil {
		stopProbeOK(t, exporter)
	}

	verdicts, final := closesOutput(t, p)
	byConn := map[uint64][]Verdict{}
	for _, v := range verdicts {
		byConn[v.Conn] = append(byConn[v.Conn], v)
	}
	want := map[uint64]bool{}
	for i, c := range cases {
		n := conns[i]
		want[n] = true
		vs := byConn[n]
		if len(vs) != 1 {
			t.Errorf("%s (*%d): %d verdicts, want 1: %+v", c.name, n, len(vs), vs)
			continue
		}
		v := vs[0]
		if v.Initiator != c.initiator || v.Cause != c.cause || (c.phase != "" && v.Phase != c.phase) {
			t.Errorf("%s (*%d): verdict %s/%s/%s, want %s/%s/%s: %s", c.name, n, v.Initiator, v.Cause, v.Phase, c.initiator, c.cause, c.phase, v.Summary)
		}
		if c.upstreamNext && v.PeerConn != n+1 {
			t.Errorf("%s (*%d): verdict names upstream connection *%d, want *%d", c.name, n, v.PeerConn, n+1)
		}
		if e, ok := accessEntry(srv, n); ok && v.Status != 0 && v.Status != e.Status {
			t.Errorf("%s (*%d): verdict status %d, access log $status %d", c.name, n, v.Status, e.Status)
		}
		t.Logf("%s: *%d %s/%s/%s %d — %s (decided at %+v ← %s)", c.name, n, v.Initiator, v.Cause, v.Phase, v.Status, v.Summary, v.DecidedAt, v.Via)
	}
	for _, v := range verdicts {
		if !want[v.Conn] {
			t.Errorf("a verdict for no case: %+v", v)
		}
	}
	if t.Failed() {
		t.Logf("closes' output:\n%s", p)
	}
	if final == nil {
		t.Fatalf("no final counts:\n%s", p)
	}
	if final.Healthy["keepalive_timeout"] < 1 || final.Healthy["tunnel_closed_by_client"] != 1 || final.Healthy["h2_client_goaway"] != 1 {
		t.Errorf("healthy closes %v: want keepalive_timeout counted, the websocket tunnel *%d the client closed once as tunnel_closed_by_client, and one h2_client_goaway", final.Healthy, wsConn)
	}
	if final.Verdicts != uint64(len(verdicts)) {
		t.Errorf("final counts say %d verdicts, %d printed", final.Verdicts, len(verdicts))
	}
	checkClosesAll(t, all, verdicts, final, map[uint64]string{wsConn: "tunnel_closed_by_client", byeConn: "h2_client_goaway", keepaliveConn: "keepalive_timeout"})
	if exporter == nil {
		return
	}
	// The same verdicts, as OTLP log records with typed attributes.
	records, exported, dropped := otlpCounts(t, exporter)
	recs := col.WaitRecords(t, exported, eventTimeout)
	if dropped != 0 || exported != records {
		t.Errorf("otlp: records %d, exported %d, dropped %d", records, exported, dropped)
	}
	for i, c := range cases {
		found := false
		for _, r := range recs {
			if r.EventName != "ngxprobe.verdict" || fmt.Sprint(r.Attributes["nginx.connection.number"]) != fmt.Sprint(conns[i]) || r.Attributes["ngxprobe.verdict.healthy"] == true {
				continue
			}
			found = true
			if r.Attributes["ngxprobe.verdict.cause"] != c.cause || r.Attributes["ngxprobe.verdict.initiator"] != c.initiator {
				t.Errorf("%s: OTLP verdict %v, want %s/%s", c.name, r.Attributes, c.initiator, c.cause)
			}
			if r.Attributes["code.function"] == nil {
				t.Errorf("%s: OTLP verdict without code.function: %v", c.name, r.Attributes)
			}
		}
		if !found {
			t.Errorf("%s: no OTLP verdict for *%d", c.name, conns[i])
		}
	}
	wsHealthy := false
	for _, r := range recs {
		if r.EventName == "ngxprobe.verdict" && fmt.Sprint(r.Attributes["nginx.connection.number"]) == fmt.Sprint(wsConn) {
			wsHealthy = r.Attributes["ngxprobe.verdict.healthy"] == true && r.SeverityText == "INFO" &&
				r.Attributes["ngxprobe.verdict.cause"] == "tunnel_closed_by_client" && strings.Contains(fmt.Sprint(r.Body), "healthy (tunnel_closed_by_client)")
			if !wsHealthy {
				t.Errorf("otlp: the tunnel the client closed (*%d): %+v, want a healthy INFO record", wsConn, r)
			}
		}
	}
	if !wsHealthy {
		t.Errorf("otlp: no healthy record for the tunnel the client closed (*%d)", wsConn)
	}
	last := recs[len(recs)-1]
	if last.EventName != "ngxprobe.summary" {
		t.Errorf("last OTLP record %q, want the summary", last.EventName)
	}
}

// checkClosesAll checks closes --all --interval against the plain trace
// that ran beside it (its verdicts and final counts): the same abnormal
// verdicts, a healthy verdict for each healthy close it counted but those
// that ended an abnormal verdict's incident (a 502, then a close after
// that complete response), the named ones of kind want[*N], the same
// counts, and counts every second.
func checkClosesAll(t *testing.T, all *proc, plain []Verdict, plainFinal *ClosesCount, want map[uint64]string) {
	t.Helper()
	verdicts, intervals, final := closesLines(t, all)
	if final == nil {
		t.Fatalf("closes --all: no final counts:\n%s", all)
	}
	healthy, allAbnormal := healthyVerdicts(verdicts)
	abnormal := map[string]int{}
	for _, v := range plain {
		abnormal[fmt.Sprintf("*%d %s/%s", v.Conn, v.Initiator, v.Cause)]++
	}
	for _, v := range allAbnormal {
		abnormal[fmt.Sprintf("*%d %s/%s", v.Conn, v.Initiator, v.Cause)]--
	}
	for _, v := range verdicts {
		if !v.Healthy {
			continue
		}
		t.Logf("closes --all: *%d %s/%s/%s — %s", v.Conn, v.Initiator, v.Cause, v.Phase, v.Summary)
		if kind, ok := want[v.Conn]; ok {
			if v.Cause != kind {
				t.Errorf("closes --all: *%d healthy %q, want %q: %+v", v.Conn, v.Cause, kind, v)
			}
			delete(want, v.Conn)
		}
		if v.Summary == "" || v.Initiator == "" || v.Peer == "" {
			t.Errorf("closes --all: a healthy verdict without summary, initiator or peer: %+v", v)
		}
	}
	for k, n := range abnormal {
		if n != 0 {
			t.Errorf("closes --all: abnormal verdict %s printed %d times more by the plain trace than by --all", k, n)
		}
	}
	for conn, kind := range want {
		t.Errorf("closes --all: no healthy verdict for *%d (%s)", conn, kind)
	}
	var printed, counted uint64
	for kind, n := range healthy {
		if n > final.Healthy[kind] {
			t.Errorf("closes --all: %d healthy verdicts of kind %s, %d counted", n, kind, final.Healthy[kind])
		}
		printed += n
	}
	for _, n := range final.Healthy {
		counted += n
	}
	if final.Lost != 0 || plainFinal.Lost != 0 {
		t.Errorf("closes lost events: %d with --all, %d without", final.Lost, plainFinal.Lost)
	}
	if counted-printed > final.Verdicts || printed == 0 {
		t.Errorf("closes --all: %d healthy verdicts by kind %v, %d counted %v: more than the %d abnormal verdicts' closes unprinted", printed, healthy, counted, final.Healthy, final.Verdicts)
	}
	if fmt.Sprint(final.Healthy) != fmt.Sprint(plainFinal.Healthy) || final.Verdicts != plainFinal.Verdicts {
		t.Errorf("closes --all counted %d verdicts and %v healthy; the plain trace %d and %v", final.Verdicts, final.Healthy, plainFinal.Verdicts, plainFinal.Healthy)
	}
	if len(intervals) < 2 {
		t.Errorf("closes --interval 1s printed %d periodic counts, want one a second", len(intervals))
	}
	prev := ClosesCount{}
	for _, c := range intervals {
		if c.Verdicts < prev.Verdicts || c.Verdicts > final.Verdicts {
			t.Errorf("periodic counts: %d verdicts after %d, final %d", c.Verdicts, prev.Verdicts, final.Verdicts)
		}
		for kind, n := range c.Healthy {
			if n < prev.Healthy[kind] || n > final.Healthy[kind] {
				t.Errorf("periodic counts: %d %s after %d, final %d", n, kind, prev.Healthy[kind], final.Healthy[kind])
			}
		}
		prev = c
	}
	if t.Failed() {
		t.Logf("closes --all's output:\n%s", all)
	}
}

// h2Goaway speaks HTTP/2 to addr by hand: one GET of path, read to its
// end, then GOAWAY with code, then FIN. (Go's HTTP/2 client sends GOAWAY
// only without an error.)
func h2Goaway(t testing.TB, addr, path string, code http2.ErrCode) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	var hdr bytes.Buffer
	enc := hpack.NewEncoder(&hdr)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "x"}, {":path", path}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("HTTP/2 response: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			done = f.StreamID == 1 && f.StreamEnded()
		case *http2.HeadersFrame:
			done = f.StreamID == 1 && f.StreamEnded()
		}
	}
	if err := fr.WriteGoAway(0, code, nil); err != nil {
		t.Fatal(err)
	}
	// The FIN comes later than the engine's quiet period after the
	// GOAWAY, as from a client finishing its streams: the GOAWAY waits
	// for it.
	time.Sleep(2 * closes.DefaultQuiet)
}

// wsUpgrade is a websocket upgrade request for path.
func wsUpgrade(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

// awaitConn finds the *N of a case in nginx's logs: the access-log entry
// of request (a "REQUEST STATUS" form picks the status), else the
// error-log line holding logText.
func awaitConn(t testing.TB, srv *nginxtest.Server, name, request, logText string) uint64 {
	t.Helper()
	status := 0
	if i := strings.LastIndexByte(request, ' '); i > 0 {
		if _, err := fmt.Sscanf(request[i+1:], "%d", &status); err == nil && !strings.HasPrefix(request[i+1:], "HTTP") {
			request = request[:i]
		} else {
			status = 0
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if request != "" {
			for _, e := range srv.AccessEntries() {
				if e.Request == request && (status == 0 || e.Status == status) {
					return e.Connection
				}
			}
		} else if l, ok := incidents.FindLogLine(srv.ErrorLog(), logText); ok {
			return l.Conn
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: nginx logged no %q / %q\n--- error.log:\n%s--- access.log:\n%s", name, request, logText, srv.ErrorLog(), srv.AccessLog())
	return 0
}

func accessEntry(srv *nginxtest.Server, conn uint64) (nginxtest.AccessEntry, bool) {
	for _, e := range srv.AccessEntries() {
		if e.Connection == conn {
			return e, true
		}
	}
	return nginxtest.AccessEntry{}, false
}

// TestClosesHealthy: 5,000 keepalive requests and 1,000 "Connection:
// close" requests give no verdict, and the healthy counts add up to the
// connections the clients opened.
func TestClosesHealthy(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			// nginx ends a keepalive connection at its 100th request.
			srv, base := startPlain(t, nginxtest.Build(t, variant), 1, "keepalive_requests 100;")
			p := startProbe(t, "closes", "-p", fmt.Sprint(srv.MasterPID()), "-o", "json")
			// Beside it, --all: a healthy verdict for every connection, and
			// the same counts.
			all := startProbe(t, "closes", "--all", "-p", fmt.Sprint(srv.MasterPID()), "-o", "json")
			var dials atomic.Int64
			dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials.Add(1)
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}
			get := func(client *http.Client, path string) {
				resp, err := client.Get(base + path)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("GET %s: %d", path, resp.StatusCode)
				}
			}
			// One transport per client, with one connection at a time: a
			// shared pool dials spare connections when requests race for
			// an idle one, and closes them unused at the end, which nginx
			// rightly logs as "client closed connection while waiting for
			// request" and closes reports as no_request.
			var wg sync.WaitGroup
			for g := range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					keepalive := &http.Transport{DialContext: dial, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
					defer keepalive.CloseIdleConnections()
					client := &http.Client{Transport: keepalive, Timeout: 10 * time.Second}
					for i := range 500 {
						get(client, fmt.Sprintf("/keepalive/%d/%d", g, i))
						if g%2 == 0 && i == 249 {
							// Half the clients leave an idle connection
							// mid-way: a healthy client_closed_keepalive.
							keepalive.CloseIdleConnections()
						}
					}
				}()
			}
			wg.Wait()
			closing := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 10 * time.Second}
			for i := range 1000 {
				get(closing, fmt.Sprintf("/close/%d", i))
			}
			time.Sleep(500 * time.Millisecond) // the last closes reach nginx
			stopProbeOK(t, p)
			stopProbeOK(t, all)
			verdicts, final := closesOutput(t, p)
			if len(verdicts) != 0 {
				t.Errorf("%d verdicts for healthy traffic, want 0; the first: %+v", len(verdicts), verdicts[0])
			}
			if final == nil {
				t.Fatalf("no final counts:\n%s", p)
			}
			var healthy uint64
			for _, n := range final.Healthy {
				healthy += n
			}
			if healthy != uint64(dials.Load()) || final.Verdicts != 0 || final.Lost != 0 {
				t.Errorf("healthy closes %d %v, verdicts %d, lost %d; the clients opened %d connections", healthy, final.Healthy, final.Verdicts, final.Lost, dials.Load())
			}
			if got := final.Healthy["closed_after_response"]; got != 1000 {
				t.Errorf("closed_after_response %d, want 1000 (the Connection: close requests)", got)
			}
			// The access log's $connection: a connection with 100 requests
			// is one nginx ended at keepalive_requests.
			perConn := map[uint64]int{}
			for _, e := range srv.AccessEntries() {
				perConn[uint64(e.Connection)]++
			}
			atLimit := uint64(0)
			for _, n := range perConn {
				if n == 100 {
					atLimit++
				}
			}
			if got := final.Healthy["keepalive_limit"]; got != atLimit || atLimit == 0 {
				t.Errorf("keepalive_limit %d, want %d (connections with 100 requests in the access log)", got, atLimit)
			}
			// Each even client closed two idle connections: at its 250th
			// request and at its end. (Go's transport may close one more
			// it could have reused, when its writer goroutine reports the
			// request written too late: every connection not ended at the
			// limit is the client's.)
			if got, want := final.Healthy["client_closed_keepalive"], uint64(dials.Load())-1000-atLimit; got < 10 || got != want {
				t.Errorf("client_closed_keepalive %d, want %d (at least 10)", got, want)
			}
			allVerdicts, allFinal := closesOutput(t, all)
			printed, abnormal := healthyVerdicts(allVerdicts)
			for _, v := range abnormal {
				t.Errorf("closes --all: an abnormal verdict for healthy traffic: %+v", v)
			}
			if allFinal == nil || fmt.Sprint(allFinal.Healthy) != fmt.Sprint(final.Healthy) || fmt.Sprint(printed) != fmt.Sprint(final.Healthy) || allFinal.Lost != 0 {
				t.Errorf("closes --all: healthy verdicts %v, final counts %+v; without --all %v", printed, allFinal, final.Healthy)
			}
			t.Logf("%d connections: healthy %v", dials.Load(), final.Healthy)
		})
	}
}

// TestClosesBurst: 2,000 abnormal closes (return 444) in about a second;
// each is a verdict or counted as lost, never silently missing.
func TestClosesBurst(t *testing.T) {
	nginxtest.RequireRoot(t)
	srv, base := startPlain(t, nginxtest.Build(t, nginxtest.VariantO2), 1, `        location = /c444 { return 444; }`)
	addr := strings.TrimPrefix(base, "http://")
	p := startProbe(t, "closes", "-p", fmt.Sprint(srv.MasterPID()), "-o", "json")
	const total = 2000
	start := time.Now()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < total; i += 8 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.WriteString(c, "GET /c444 HTTP/1.1\r\nHost: x\r\n\r\n")
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	time.Sleep(time.Second)
	stopProbeOK(t, p)
	verdicts, final := closesOutput(t, p)
	if final == nil {
		t.Fatalf("no final counts:\n%s", p)
	}
	explained := map[uint64]bool{}
	for _, v := range verdicts {
		explained[v.Conn] = true
		if v.Cause != "return_444" && final.Lost == 0 {
			t.Errorf("verdict %s/%s for a return 444 with nothing lost: %+v", v.Initiator, v.Cause, v)
		}
	}
	missing := 0
	for _, e := range srv.AccessEntries() {
		if e.Status == 444 && !explained[e.Connection] {
			missing++
		}
	}
	if uint64(missing) > final.Lost {
		t.Errorf("%d of %d closes have no verdict, and only %d events were counted lost", missing, total, final.Lost)
	}
	t.Logf("%d closes in %v (%.0f/s): %d verdicts, %d without one, %d events lost", total, took.Round(time.Millisecond), total/took.Seconds(), len(verdicts), missing, final.Lost)
}

// TestClosesAllNginx: closes --all-nginx follows masters in their own
// PID and mount namespaces; each verdict is labelled with its master.
func TestClosesAllNginx(t *testing.T) {
	nginxtest.RequireRoot(t)
	build := nginxtest.Build(t, nginxtest.VariantO2)
	a := startNamespaced(t, privateBinary(t, build).Binary)
	p := startProbe(t, "closes", "--all-nginx", "-o", "json")
	b := startNamespaced(t, privateBinary(t, build).Binary) // after ngxprobe
	if !waitUntil(10*time.Second, func() bool { return strings.Contains(p.stderr.String(), fmt.Sprintf("masters %d)", b.master)) }) {
		t.Fatalf("master %d not attached: %s", b.master, p)
	}
	for _, n := range []*nsNginx{a, b} {
		httpGetMaybe(fmt.Sprintf("http://127.0.0.1:%d/close", n.port))
	}
	labelled := func(master int) []Verdict {
		vs, _ := closesOutput(t, p)
		var out []Verdict
		for _, v := range vs {
			if v.Nginx != nil && v.Nginx.MasterPID == master {
				out = append(out, v)
			}
		}
		return out
	}
	for _, n := range []*nsNginx{a, b} {
		if !waitUntil(eventTimeout, func() bool { return len(labelled(n.master)) == 1 }) {
			t.Errorf("no verdict labelled with master %d: %s", n.master, p)
		}
	}
	stopProbeOK(t, p)
	for _, n := range []*nsNginx{a, b} {
		for _, v := range labelled(n.master) {
			if v.Cause != "return_444" || v.Initiator != "nginx" || v.URI != "/close" {
				t.Errorf("master %d: verdict %+v, want nginx/return_444 for /close", n.master, v)
			}
		}
	}
}

// A reload while a request waits for its upstream: the old worker's
// worker_shutdown_timeout closes it. The verdict is nginx's, decided in
// ngx_shutdown_timer_handler, not the client's (the timer sets c->error).
func TestClosesShutdownTimeout(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			upSlow := closeUpstream(t, func(c *net.TCPConn) {
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.Copy(io.Discard, c)
			})
			addr := fmt.Sprintf("127.0.0.1:%d", nginxtest.FreePort(t))
			srv := nginxtest.Start(t, nginxtest.Build(t, variant), nginxtest.Config{Main: "worker_shutdown_timeout 1s;", HTTP: fmt.Sprintf(`
    server {
        listen %s;
        proxy_read_timeout 30s;
        location = /wait { proxy_pass http://%s; }
    }`, addr, upSlow)})
			p := startProbe(t, "closes", "-p", fmt.Sprint(srv.MasterPID()), "-o", "json")
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, _ = io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
			time.Sleep(200 * time.Millisecond) // nginx is waiting for the upstream
			start := time.Now()
			srv.Reload(t) // returns once the old worker has exited
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.Copy(io.Discard, c)
			if d := time.Since(start); d < 900*time.Millisecond {
				t.Fatalf("the old worker exited after %v, before worker_shutdown_timeout (1s)", d)
			}
			n := awaitConn(t, srv, "shutdown timeout", "GET /wait HTTP/1.1", "")
			time.Sleep(500 * time.Millisecond)
			stopProbeOK(t, p)
			verdicts, _ := closesOutput(t, p)
			if len(verdicts) != 1 {
				t.Fatalf("%d verdicts, want 1 for *%d:\n%s", len(verdicts), n, p)
			}
			v := verdicts[0]
			if v.Conn != n || v.Initiator != "nginx" || v.Cause != "worker_shutdown_timeout" || v.DecidedAt == nil || symbols.BaseName(v.DecidedAt.Symbol) != "ngx_shutdown_timer_handler" {
				t.Errorf("verdict %+v, want *%d nginx/worker_shutdown_timeout decided at ngx_shutdown_timer_handler", v, n)
			}
			t.Logf("*%d %s/%s/%s — %s (decided at %+v)", v.Conn, v.Initiator, v.Cause, v.Phase, v.Summary, v.DecidedAt)
		})
	}
}
