package debuginfod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// errStalled is the cause of a request canceled for want of data.
var errStalled = errors.New("stalled")

// download fetches one file into the cache, one server at a time.
type download struct {
	c      *Client
	id     string
	typ    FileType
	name   string // Request.Name, for progress lines
	target string // <cache>/<id>/<typ>
}

// from fetches the file from one server (a URL up to /buildid) into the
// cache. On error nothing is left behind.
func (d *download) from(ctx context.Context, server string) (err error) {
	url := server + "/" + d.id + "/" + string(d.typ)
	timeout := d.c.timeout()
	reqCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var watchdog *time.Timer
	if timeout > 0 {
		watchdog = time.AfterFunc(timeout, func() { cancel(errStalled) })
		defer watchdog.Stop()
	}
	// explain turns an error while the request runs into ours.
	explain := func(err error) error {
		if context.Cause(reqCtx) == errStalled && ctx.Err() == nil {
			return fmt.Errorf("%w: no data for %v", ErrTimeout, timeout)
		}
		return netError(err)
	}

	prog := startProgress(d.c.Progress, d.label(), url, timeout)
	defer func() { prog.finish(err) }()

	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", userAgent)
	maxSize := d.c.maxSize()
	if maxSize > 0 {
		req.Header.Set("X-DEBUGINFOD-MAXSIZE", strconv.FormatInt(maxSize, 10))
	}
	resp, err := d.c.httpClient().Do(req)
	if err != nil {
		return explain(err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusNotAcceptable: // the answer to X-DEBUGINFOD-MAXSIZE
		return fmt.Errorf("%w: the server says it is over MaxSize (%d bytes)%s", ErrTooLarge, maxSize, raiseMaxSize)
	default:
		return fmt.Errorf("HTTP %s%s", resp.Status, bodySnippet(resp.Body))
	}
	size := resp.ContentLength
	if size < 0 { // compressed, or chunked: the server's own header
		if n, err := strconv.ParseInt(resp.Header.Get("X-Debuginfod-Size"), 10, 64); err == nil && n >= 0 {
			size = n
		}
	}
	if maxSize > 0 && size > maxSize {
		return fmt.Errorf("%w: %d bytes, MaxSize is %d%s", ErrTooLarge, size, maxSize, raiseMaxSize)
	}
	prog.started(size)

	dir := filepath.Dir(d.target)
	var tmp *os.File
	for range 2 { // twice, as elfutils: a failed fetch may rmdir it meanwhile
		_ = os.Mkdir(dir, 0o700) // "files will be 0400 later"
		if tmp, err = os.CreateTemp(dir, string(d.typ)+".*"); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			os.Remove(dir) // as elfutils' rmdir: only when empty
		}
	}()

	body := &meter{r: resp.Body, n: &prog.n, last: &prog.last, watchdog: watchdog, timeout: timeout}
	n, err := d.receive(tmp, body)
	switch {
	case err == nil && size >= 0 && n != size:
		return fmt.Errorf("%w: got %d bytes, the server announced %d", io.ErrUnexpectedEOF, n, size)
	case errors.Is(err, io.ErrUnexpectedEOF) && size > n:
		return fmt.Errorf("download cut short after %d of %d bytes: %w", n, size, err)
	case errors.Is(err, io.ErrUnexpectedEOF) && n >= 4:
		return fmt.Errorf("download cut short after %d bytes: %w", n, err)
	case (errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF) && n < 4:
		return fmt.Errorf("%w: not an ELF file (%d bytes)", ErrBuildIDMismatch, n)
	case err != nil:
		return explain(err)
	}
	if watchdog != nil {
		watchdog.Stop()
	}
	if err := checkELF(tmp, n, d.id); err != nil {
		return err
	}
	return commit(tmp, d.target, lastModified(resp))
}

// raiseMaxSize says how to raise the bound, in ErrTooLarge's messages.
const raiseMaxSize = " (debuginfod.Client.MaxSize, DEBUGINFOD_MAXSIZE; raise it to fetch larger files)"

// receive copies the body into f, checking the ELF magic first and
// MaxSize all along.
func (d *download) receive(f *os.File, body io.Reader) (int64, error) {
	maxSize := d.c.maxSize()
	if maxSize > 0 {
		body = io.LimitReader(body, maxSize+1)
	}
	var magic [4]byte
	if n, err := io.ReadFull(body, magic[:]); err != nil {
		return int64(n), err
	}
	if string(magic[:]) != "\x7fELF" {
		return 4, fmt.Errorf("%w: not an ELF file (it starts with %q)", ErrBuildIDMismatch, magic[:])
	}
	if _, err := f.Write(magic[:]); err != nil {
		return 4, err
	}
	n, err := io.CopyBuffer(f, body, make([]byte, 256<<10))
	n += 4
	if err != nil {
		return n, err
	}
	if maxSize > 0 && n > maxSize {
		return n, fmt.Errorf("%w: more than MaxSize (%d bytes)%s", ErrTooLarge, maxSize, raiseMaxSize)
	}
	return n, nil
}

func (d *download) label() string {
	if d.name != "" {
		return fmt.Sprintf("%s of %s (build-id %s)", d.typ, d.name, d.id)
	}
	return fmt.Sprintf("%s of build-id %s", d.typ, d.id)
}

// meter counts the bytes of a body and pushes the watchdog back on each.
type meter struct {
	r        io.Reader
	n        *atomic.Int64
	last     *atomic.Int64 // time of the last byte, UnixNano
	watchdog *time.Timer   // nil: no timeout
	timeout  time.Duration
}

func (m *meter) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if n > 0 {
		m.n.Add(int64(n))
		m.last.Store(time.Now().UnixNano())
		if m.watchdog != nil {
			m.watchdog.Reset(m.timeout)
		}
	}
	return n, err
}

// bodySnippet is the start of an error page, for the error message.
func bodySnippet(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 200))
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
	if s == "" {
		return ""
	}
	return ": " + s
}

// lastModified is the file's time for the cache, as elfutils sets it (from
// Last-Modified, else now).
func lastModified(resp *http.Response) time.Time {
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		return t
	}
	return time.Now()
}
