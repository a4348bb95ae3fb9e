package incidents

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// upstreamConnTimeout bounds everything one upstream connection does.
const upstreamConnTimeout = 10 * time.Second

// UpstreamResult is what the upstream saw of one proxied request.
type UpstreamResult struct {
	// Request is the request line nginx sent upstream, e.g.
	// "GET /ws/half-close/1 HTTP/1.1" ("" when none could be read).
	Request string
	// Header is the request header nginx sent upstream.
	Header http.Header
	// Body is the request body nginx sent upstream.
	Body []byte
	// Answered: the upstream wrote (part of) its response.
	Answered bool
	// NginxClosed: nginx closed the upstream connection while the upstream
	// still waited on it; NginxReset: with an RST, not a FIN.
	NginxClosed bool
	NginxReset  bool
	// Err is the first unexpected error of the upstream's side, if any.
	Err error
}

// handler serves one request; res already holds Request, Header and Body.
type handler func(c net.Conn, br *bufio.Reader, res *UpstreamResult)

// upstream is a raw TCP "HTTP" server on 127.0.0.1 whose behaviour per
// request is a handler. t.Cleanup closes the listener and every connection
// and waits for all of its goroutines.
type upstream struct {
	ln     net.Listener
	handle handler
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	reqs   map[string]*upRequest // by request path
}

// upRequest tracks one request path through the upstream.
type upRequest struct {
	got  chan struct{}       // closed once the request has been read
	done chan UpstreamResult // the result, once the handler is done
}

func startUpstream(t testing.TB, h handler) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("incidents: upstream listen: %v", err)
	}
	u := &upstream{
		ln:     ln,
		handle: h,
		conns:  map[net.Conn]struct{}{},
		reqs:   map[string]*upRequest{},
	}
	u.wg.Add(1)
	go u.serve()
	t.Cleanup(u.close)
	return u
}

// Addr is the upstream's "127.0.0.1:port".
func (u *upstream) Addr() string { return u.ln.Addr().String() }

func (u *upstream) serve() {
	defer u.wg.Done()
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		u.mu.Lock()
		if u.closed {
			u.mu.Unlock()
			c.Close()
			return
		}
		u.conns[c] = struct{}{}
		u.wg.Add(1)
		u.mu.Unlock()
		go u.serveConn(c)
	}
}

func (u *upstream) serveConn(c net.Conn) {
	defer u.wg.Done()
	defer func() {
		c.Close()
		u.mu.Lock()
		delete(u.conns, c)
		u.mu.Unlock()
	}()
	_ = c.SetDeadline(time.Now().Add(upstreamConnTimeout))
	br := bufio.NewReader(c)
	var res UpstreamResult
	req, err := http.ReadRequest(br)
	if err != nil {
		// nginx connected but sent no request: nothing to report on.
		return
	}
	res.Request = fmt.Sprintf("%s %s %s", req.Method, req.RequestURI, req.Proto)
	res.Header = req.Header
	res.Body, res.Err = io.ReadAll(io.LimitReader(req.Body, 1<<20))
	ur := u.request(req.URL.Path)
	select {
	case <-ur.got: // a second request for the same path
	default:
		close(ur.got)
	}
	if res.Err == nil {
		u.handle(c, br, &res)
	}
	select {
	case ur.done <- res:
	default:
	}
}

// request is the state of the request for path.
func (u *upstream) request(path string) *upRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	ur, ok := u.reqs[path]
	if !ok {
		ur = &upRequest{got: make(chan struct{}), done: make(chan UpstreamResult, 1)}
		u.reqs[path] = ur
	}
	return ur
}

// waitGot waits up to timeout for the upstream to have read the request
// for path; it reports whether it has.
func (u *upstream) waitGot(path string, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-u.request(path).got:
		return true
	case <-timer.C:
		return false
	}
}

// wait returns the upstream's result for path, or ok false after timeout.
func (u *upstream) wait(path string, timeout time.Duration) (UpstreamResult, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case res := <-u.request(path).done:
		return res, true
	case <-timer.C:
		return UpstreamResult{}, false
	}
}

func (u *upstream) close() {
	u.mu.Lock()
	u.closed = true
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.ln.Close()
	u.wg.Wait()
}

// waitNginxClose waits up to d for nginx to close the upstream connection,
// discarding anything it sends, and records a close in res. It reports
// whether nginx closed it; false means d passed.
func waitNginxClose(c net.Conn, br *bufio.Reader, d time.Duration, res *UpstreamResult) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Now().Add(upstreamConnTimeout))
	_, err := io.Copy(io.Discard, br)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	res.NginxClosed = true
	res.NginxReset = errors.Is(err, syscall.ECONNRESET)
	if err != nil && !res.NginxReset && res.Err == nil {
		res.Err = err
	}
	return true
}

// write writes s to c and records it in res.
func write(c net.Conn, res *UpstreamResult, s string) {
	res.Answered = true
	if _, err := io.WriteString(c, s); err != nil && res.Err == nil {
		res.Err = err
	}
}

// delayedAnswer waits delay for nginx to close the connection; if it
// doesn't, it writes answer.
func delayedAnswer(delay time.Duration, answer string) handler {
	return func(c net.Conn, br *bufio.Reader, res *UpstreamResult) {
		if waitNginxClose(c, br, delay, res) {
			return
		}
		write(c, res, answer)
	}
}
