package incidents

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

const (
	dialTimeout      = 3 * time.Second
	handshakeTimeout = 5 * time.Second
	// readTimeout bounds how long a client waits for nginx to close.
	readTimeout = 5 * time.Second
	// maxResponse caps what Result.Response keeps.
	maxResponse = 64 << 10
)

// Result is what the client observed of one Trigger.
type Result struct {
	// Request is the request line as the access log's $request shows it;
	// each Trigger uses its own path, e.g. "GET /ws/half-close/2 HTTP/1.1".
	Request string
	// Status is the status code of the response the client got, 0 if none.
	Status int
	// Response is every byte the client read (decrypted, with TLS), at
	// most 64 KiB.
	Response []byte
	// BodyBytes is the number of bytes read after the response header.
	BodyBytes int
	// EOF: the connection ended in an orderly TCP close (FIN) from nginx.
	EOF bool
	// Reset: the connection ended with ECONNRESET (RST from nginx).
	Reset bool
	// CloseNotify: with TLS, nginx sent a close_notify alert.
	CloseNotify bool
	// ReadErr is the error that ended the client's read: nil for a plain
	// EOF, a timeout error for a client that gave up (ClientAbort499).
	ReadErr error
	// Elapsed is the time from connect to the end of the client's part.
	Elapsed time.Duration
	// Upstream is what the upstream saw of this request, when it finished
	// within a few seconds of the client (UpstreamDone).
	Upstream     UpstreamResult
	UpstreamDone bool
}

// dial connects to addr over TCP.
func dial(addr string) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// readUntilClose reads r until an error or the deadline (already set on the
// connection); it returns what it read (capped) and the error, nil for EOF.
func readUntilClose(r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	chunk := make([]byte, 4096)
	for {
		n, err := r.Read(chunk)
		if n > 0 && buf.Len() < maxResponse {
			buf.Write(chunk[:min(n, maxResponse-buf.Len())])
		}
		if err == io.EOF {
			return buf.Bytes(), nil
		}
		if err != nil {
			return buf.Bytes(), err
		}
	}
}

// fill sets Response, Status, BodyBytes, ReadErr, EOF and Reset of res.
func (res *Result) fill(data []byte, err error) {
	res.Response = data
	res.ReadErr = err
	res.EOF = err == nil
	res.Reset = errors.Is(err, syscall.ECONNRESET)
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		res.BodyBytes = len(data) - i - 4
	}
	// "HTTP/1.1 200 OK"
	if f := bytes.Fields(firstLine(data)); len(f) >= 2 && bytes.HasPrefix(f[0], []byte("HTTP/")) {
		res.Status, _ = strconv.Atoi(string(f[1]))
	}
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return bytes.TrimRight(b[:i], "\r")
	}
	return b
}

// isTimeout reports whether err is a deadline.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// rawObserver wraps the TCP connection under a tls.Conn to see how the TCP
// stream ended: a tls.Conn returns io.EOF both for close_notify and a bare
// FIN.
type rawObserver struct {
	net.Conn
	mu  sync.Mutex
	err error // first read error of the raw connection
}

func (o *rawObserver) Read(p []byte) (int, error) {
	n, err := o.Conn.Read(p)
	if err != nil {
		o.mu.Lock()
		if o.err == nil {
			o.err = err
		}
		o.mu.Unlock()
	}
	return n, err
}

func (o *rawObserver) rawErr() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// tlsClientConfig trusts anything: the server's cert is self-signed.
func tlsClientConfig() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}
}

// handshake runs the TLS handshake within handshakeTimeout.
func handshake(tc *tls.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	return tc.HandshakeContext(ctx)
}

// fillTLS is fill for a TLS client: it tells close_notify from a bare FIN
// by reading the raw connection once the tls.Conn has returned io.EOF.
func (res *Result) fillTLS(data []byte, err error, raw *net.TCPConn, obs *rawObserver) {
	res.fill(data, err)
	if err != nil {
		return
	}
	// io.EOF from the tls.Conn.
	rawErr := obs.rawErr()
	if rawErr == nil {
		// The tls.Conn stopped at a close_notify before the TCP stream
		// ended: see how it ends.
		res.CloseNotify = true
		_, rawErr = readUntilClose(raw)
		if rawErr == nil {
			rawErr = io.EOF
		}
	}
	res.EOF = rawErr == io.EOF
	res.Reset = errors.Is(rawErr, syscall.ECONNRESET)
	if !res.EOF {
		res.ReadErr = rawErr
	}
}
