package closes

import (
	"container/list"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// DefaultQuiet is how long an incident whose client connection lives on
// waits for more events before its verdict is printed.
const DefaultQuiet = 300 * time.Millisecond

// Engine joins the probe set's events into verdicts. It is not safe for
// concurrent use.
type Engine struct {
	// Symbolize names the function at a runtime address of process pid
	// (event handlers are read as pointers); "" when unknown.
	Symbolize func(pid uint32, addr uint64) string
	// Quiet is how long an incident waits for more events; DefaultQuiet
	// if zero.
	Quiet time.Duration
	// All makes every healthy close a verdict too, marked Healthy: those
	// the engine recognizes (a lingering close, a tunnel the client
	// closed) and, from the probe set ProbeSet makes with all, the
	// "healthy" events the kernel would otherwise count. The counts do
	// not change with it.
	All bool

	pending map[incidentKey]*incident
	// byArrival holds the pending incidents, the one whose last event
	// came longest ago first: the oldest is found, and the quiet ones
	// are flushed, without a look at the rest.
	byArrival list.List
	healthy   map[string]uint64
	verdicts  uint64
}

type incidentKey struct {
	pid  uint32 // the master's or worker's: *N is unique per nginx
	conn uint64
}

// incident is the events of one client connection not yet explained.
type incident struct {
	key    incidentKey
	elem   *list.Element // in Engine.byArrival
	last   time.Time
	first  output.Event
	close  *output.Event
	term   *output.Event
	next   *output.Event
	h2     *output.Event
	stream *output.Event
	tunnel *output.Event
	gaveUp *output.Event
	goaway *output.Event
	// healthy is the close of a connection that ended healthily
	// (ProbeSet with all).
	healthy *output.Event
	errors  []output.Event
	logs    []output.Event
}

// event is an output.Event with its values by group and name.
type event struct {
	output.Event
}

func (e event) value(group, name string) (output.Value, bool) {
	for _, v := range e.Values {
		if v.Group == group && v.Name == name {
			return v, v.Readable
		}
	}
	return output.Value{}, false
}

func num(ev output.Event, group, name string) int64 {
	v, ok := event{Event: ev}.value(group, name)
	if !ok {
		return 0
	}
	switch d := v.Data.(type) {
	case int64:
		return d
	case uint64:
		return int64(d)
	case output.Pointer:
		return int64(d)
	}
	return 0
}

func str(ev output.Event, group, name string) string {
	v, ok := event{Event: ev}.value(group, name)
	if !ok {
		return ""
	}
	if s, ok := v.Data.(string); ok {
		return s
	}
	return ""
}

func readable(ev output.Event, group, name string) bool {
	_, ok := event{Event: ev}.value(group, name)
	return ok
}

func groupOf(ev output.Event) string {
	if len(ev.Values) == 0 {
		return ""
	}
	return ev.Values[0].Group
}

// Add takes one event of the probe set and returns the verdicts it
// completes (the client connection closed).
func (e *Engine) Add(ev output.Event) []output.Verdict {
	if e.pending == nil {
		e.pending = map[incidentKey]*incident{}
		e.healthy = map[string]uint64{}
	}
	g := groupOf(ev)
	var conn uint64
	switch g {
	case groupError:
		conn = uint64(num(ev, g, "log")) // an upstream's errors join its client
	case groupLog:
		conn = uint64(num(ev, g, "conn"))
		if conn == 0 {
			return nil // not about a connection (a config or cycle message)
		}
	default:
		if (&incident{}).single(g) == nil {
			return nil
		}
		conn = uint64(num(ev, g, "conn"))
	}
	if g == groupHealthy {
		// Counted here, whatever verdict its incident gets: as the
		// kernel counts it without All.
		e.healthy[healthyEventKind(ev)]++
	}
	ends := g == groupClose || g == groupStream || g == groupHealthy
	key := incidentKey{pid: ev.PID, conn: conn}
	in := e.pending[key]
	var out []output.Verdict
	switch {
	case in != nil:
		e.byArrival.MoveToBack(in.elem)
	case ends:
		// A connection's only event (with All, most connections'): it is
		// explained below at once, so it never waits or pushes out
		// another.
		in = &incident{key: key, first: ev}
	default:
		if len(e.pending) >= MaxPending {
			out = e.flushOldest()
		}
		in = &incident{key: key, first: ev}
		in.elem = e.byArrival.PushBack(in)
		e.pending[key] = in
	}
	in.last = ev.Time
	if slot := in.single(g); slot != nil {
		*slot = &ev
	}
	switch g {
	case groupError:
		if len(in.errors) < maxKept {
			in.errors = append(in.errors, ev)
		}
	case groupLog:
		if len(in.logs) < maxKept {
			in.logs = append(in.logs, ev)
		}
	}
	if ends {
		// The connection is gone: nothing more will come for it.
		e.remove(in)
		return append(out, e.explain(in)...)
	}
	return out
}

// single is where an incident keeps the event of a group it keeps one of
// (the last seen, each with the client's *N as "conn"); nil for the
// others.
func (in *incident) single(group string) **output.Event {
	switch group {
	case groupClose:
		return &in.close
	case groupTerminate:
		return &in.term
	case groupNext:
		return &in.next
	case groupH2Reset:
		return &in.h2
	case groupStream:
		return &in.stream
	case groupTunnel:
		return &in.tunnel
	case groupGaveUp:
		return &in.gaveUp
	case groupH2Goaway:
		return &in.goaway
	case groupHealthy:
		return &in.healthy
	}
	return nil
}

// awaitsClose is true for an incident whose close is sure to come and
// names its verdict, so it waits past the quiet period: a client that
// sent GOAWAY may finish its streams first, and nginx closes an idle
// HTTP/2 connection at keepalive_timeout.
func (in *incident) awaitsClose(now time.Time) bool {
	return in.goaway != nil && in.close == nil && now.Sub(in.goaway.Time) < MaxGoawayWait
}

// MaxGoawayWait bounds how long an HTTP/2 client's GOAWAY waits for its
// connection's close: longer than nginx's default keepalive_timeout
// (75 s), after which nginx closes an idle HTTP/2 connection.
const MaxGoawayWait = 2 * time.Minute

// MaxPending bounds the incidents waiting for more events: past it, the
// oldest is explained with what it has.
const MaxPending = 65536

// maxKept bounds the socket errors and error-log lines one incident
// keeps: a long-lived connection failing often keeps the first ones.
const maxKept = 16

func (e *Engine) flushOldest() []output.Verdict {
	oldest := e.byArrival.Front().Value.(*incident)
	e.remove(oldest)
	return e.explain(oldest)
}

// remove takes a pending incident out of the map and the list; one that
// never waited is in neither.
func (e *Engine) remove(in *incident) {
	if in.elem == nil {
		return
	}
	delete(e.pending, in.key)
	e.byArrival.Remove(in.elem)
}

// Flush returns the verdicts of incidents quiet since before now-Quiet,
// or of all of them when all is set (the trace ends). It looks at the
// incidents in the order their last events came and stops at the first
// still in its quiet period: one whose event came later with an earlier
// time (events are stamped on their CPU after they reserve their place
// in the ring buffer, so times from two CPUs can cross) waits for the
// next Flush.
func (e *Engine) Flush(now time.Time, all bool) []output.Verdict {
	quiet := e.Quiet
	if quiet == 0 {
		quiet = DefaultQuiet
	}
	var ready []*incident
	for el := e.byArrival.Front(); el != nil; el = e.byArrival.Front() {
		in := el.Value.(*incident)
		if !all && now.Sub(in.last) < quiet {
			break
		}
		if !all && in.awaitsClose(now) {
			// It waits as if its last event came now.
			in.last = now
			e.byArrival.MoveToBack(el)
			continue
		}
		ready = append(ready, in)
		e.remove(in)
	}
	sort.SliceStable(ready, func(i, j int) bool { return ready[i].last.Before(ready[j].last) })
	var out []output.Verdict
	for _, in := range ready {
		out = append(out, e.explain(in)...)
	}
	return out
}

// Verdicts is how many verdicts the engine has returned.
func (e *Engine) Verdicts() uint64 { return e.verdicts }

// Healthy returns the healthy closes by kind: those the kernel counted
// (rows of the HealthyAggregation and the KeepaliveLimitAggregation; nil
// when there are none, as with ProbeSet's all), those it sent as
// "healthy" events instead, and those the engine recognized among the
// abnormal-looking closes (a lingering close, a tunnel the client closed).
func (e *Engine) Healthy(agg, keepaliveLimit *output.Aggregate) []output.HealthyCount {
	counts := map[string]uint64{}
	for k, n := range e.healthy {
		counts[k] += n
	}
	if agg != nil {
		for _, r := range agg.Rows {
			if len(r.Keys) != 3 {
				continue
			}
			idle, eof, timedout := keyBit(r.Keys[0]), keyBit(r.Keys[1]), keyBit(r.Keys[2])
			counts[healthyKind(idle, eof, timedout)] += uint64(r.Count)
		}
	}
	if keepaliveLimit != nil {
		for _, r := range keepaliveLimit.Rows {
			counts[HealthyKeepaliveLimit] += uint64(r.Count)
		}
	}
	var out []output.HealthyCount
	for k, n := range counts {
		out = append(out, output.HealthyCount{Kind: k, Count: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return out
}

func keyBit(v output.Key) bool {
	switch d := v.Data.(type) {
	case int64:
		return d != 0
	case uint64:
		return d != 0
	}
	return false
}

// The healthy kinds, as the summary and the JSON "healthy" object name
// them.
const (
	HealthyKeepaliveClosed  = "client_closed_keepalive"
	HealthyKeepaliveTimeout = "keepalive_timeout"
	HealthyIdleClosed       = "idle_closed_by_nginx"
	HealthyAfterResponse    = "closed_after_response"
	// nginx ended a keepalive connection after a complete response, not
	// its first: keepalive_requests or keepalive_time reached (or the
	// client asked, after several requests).
	HealthyKeepaliveLimit = "keepalive_limit"
	HealthyLingering      = "lingering_close"
	// A websocket (upgraded) tunnel the client closed: how tunnels end.
	HealthyTunnelClosed = "tunnel_closed_by_client"
	// An HTTP/2 client that said goodbye (GOAWAY, NO_ERROR) and left.
	HealthyH2ClientGoaway = "h2_client_goaway"
)

// healthyClose counts a healthy close of kind and, with All, makes v its
// verdict (true): marked Healthy, with the kind as its cause.
func (e *Engine) healthyClose(v *output.Verdict, kind, initiator, summary string) bool {
	e.healthy[kind]++
	if !e.All {
		return false
	}
	markHealthy(v, kind, initiator, summary)
	return true
}

// markHealthy makes v the verdict of a healthy close of kind.
func markHealthy(v *output.Verdict, kind, initiator, summary string) {
	v.Healthy, v.Cause, v.Initiator, v.Summary = true, kind, initiator, summary
}

// healthyEvent makes a "healthy" event (ProbeSet with all; Add counted
// it) v's verdict, with All: the close the kernel would otherwise have
// counted, named by the same kinds.
func (e *Engine) healthyEvent(h output.Event, v *output.Verdict) bool {
	if !e.All {
		return false
	}
	g := groupHealthy
	v.Peer = str(h, g, "client")
	v.Phase = phaseOf(e.handler(h, g, "rh"))
	kind := healthyEventKind(h)
	initiator, summary := Nginx, ""
	switch kind {
	case HealthyKeepaliveClosed:
		initiator, summary = Client, "client closed its idle keepalive connection"
	case HealthyKeepaliveTimeout:
		summary = "nginx closed the idle keepalive connection (keepalive_timeout)"
	case HealthyIdleClosed:
		summary = "nginx closed an idle connection (a reload or shutdown, or worker_connections ran out)"
	case HealthyKeepaliveLimit:
		summary = "nginx closed the keepalive connection after a complete response, not its first (keepalive_requests or keepalive_time reached, or the client asked)"
	default:
		summary = "nginx closed the connection after a complete response (Connection: close)"
	}
	markHealthy(v, kind, initiator, summary)
	return true
}

// healthyEventKind is the kind of a "healthy" event's close, as the
// kernel counts it without all (ProbeSet's two counting filters).
func healthyEventKind(h output.Event) string {
	g := groupHealthy
	idle := num(h, g, "idle") != 0
	if !idle && num(h, g, "requests") > 1 {
		return HealthyKeepaliveLimit
	}
	return healthyKind(idle, num(h, g, "eof") != 0, num(h, g, "timedout") != 0)
}

func healthyKind(idle, eof, timedout bool) string {
	switch {
	case idle && timedout:
		return HealthyKeepaliveTimeout
	case idle && eof:
		return HealthyKeepaliveClosed
	case idle:
		// Reload, shutdown, or nginx reusing an idle connection when it
		// runs out of worker_connections.
		return HealthyIdleClosed
	}
	return HealthyAfterResponse
}

func (e *Engine) handler(ev output.Event, group, name string) string {
	if e.Symbolize == nil {
		return ""
	}
	v, ok := event{Event: ev}.value(group, name)
	if !ok {
		return ""
	}
	p, ok := v.Data.(output.Pointer)
	if !ok || p == 0 {
		return ""
	}
	return symbols.BaseName(e.Symbolize(ev.PID, uint64(p)))
}

// phaseOf names what a connection was doing from its event handler.
func phaseOf(handler string) string {
	switch handler {
	case "ngx_http_wait_request_handler":
		return PhaseWaitingRequest
	case "ngx_http_ssl_handshake", "ngx_http_ssl_handshake_handler", "ngx_ssl_handshake_handler":
		return PhaseTLSHandshake
	case "ngx_http_process_request_line", "ngx_http_process_request_headers":
		return PhaseRequestHeader
	case "ngx_http_read_client_request_body_handler", "ngx_http_read_discarded_request_body_handler", "ngx_http_discarded_request_body_handler":
		return PhaseRequestBody
	case "ngx_http_keepalive_handler":
		return PhaseIdle
	case "ngx_http_lingering_close_handler":
		return PhaseLingeringClose
	case "ngx_http_writer", "ngx_http_upstream_process_downstream", "ngx_http_upstream_process_non_buffered_downstream", "ngx_http_upstream_process_upstream", "ngx_http_upstream_process_non_buffered_upstream":
		return PhaseResponse
	case "ngx_http_upstream_rd_check_broken_connection", "ngx_http_upstream_wr_check_broken_connection":
		return PhaseWaitingUpstream
	case "ngx_http_upstream_upgraded_read_downstream", "ngx_http_upstream_upgraded_write_downstream", "ngx_http_upstream_upgraded_read_upstream", "ngx_http_upstream_upgraded_write_upstream":
		return PhaseTunnel
	case "ngx_http_v2_read_handler", "ngx_http_v2_write_handler", "ngx_http_v2_idle_handler":
		return PhaseHTTP2
	case "ngx_http_upstream_handler":
		return PhaseUpstream
	}
	if strings.HasPrefix(handler, "ngx_stream_") {
		return PhaseStream
	}
	return ""
}

// The phases: what nginx was doing when the connection ended.
const (
	PhaseWaitingRequest  = "waiting_request"
	PhaseTLSHandshake    = "tls_handshake"
	PhaseRequestHeader   = "request_header"
	PhaseRequestBody     = "request_body"
	PhaseIdle            = "keepalive_idle"
	PhaseLingeringClose  = "lingering_close"
	PhaseResponse        = "response"
	PhaseWaitingUpstream = "waiting_upstream"
	PhaseTunnel          = "tunnel"
	PhaseHTTP2           = "http2"
	PhaseUpstream        = "upstream"
	PhaseUpstreamConnect = "upstream_connect"
	PhaseUpstreamSend    = "upstream_send_request"
	PhaseUpstreamHeader  = "upstream_header"
	PhaseUpstreamBody    = "upstream_body"
	PhaseStream          = "stream"
)

// The causes.
const (
	CauseFIN             = "fin"
	CauseRST             = "rst"
	CauseRefused         = "refused"
	CauseTimeout         = "timeout"
	CauseTLS             = "tls"
	CauseSocketError     = "socket_error"
	CauseInvalidResponse = "invalid_response"
	CauseH2ResetStream   = "h2_rst_stream"
	CauseReturn444       = "return_444"
	CauseLimitReq        = "limit_req"
	CauseLimitConn       = "limit_conn"
	CauseHandlerError    = "handler_error"
	CauseNoRequest       = "no_request"
	CauseShutdownTimeout = "worker_shutdown_timeout"
	CauseH2Goaway        = "h2_goaway"
)

// The initiators and sides.
const (
	Client   = "client"
	Upstream = "upstream"
	Nginx    = "nginx"
)

// Errno values nginx reports (Linux).
const (
	errnoEPIPE        = 32
	errnoECONNRESET   = 104
	errnoETIMEDOUT    = 110
	errnoECONNREFUSED = 111
)

// ngx_http_upstream_next's ft_type bits.
const (
	ftError         = 0x2
	ftTimeout       = 0x4
	ftInvalidHeader = 0x8
)

// explain turns an incident into its verdict, or none when it is healthy
// (a lingering close, a "healthy" event) and All is not set, or holds
// nothing to explain.
func (e *Engine) explain(in *incident) []output.Verdict {
	v := output.Verdict{Time: in.first.Time, PID: in.first.PID, Conn: in.key.conn, Side: Client}
	var primary *output.Event
	limit := e.limitLog(in)
	for _, l := range in.logs {
		if v.ErrorLog == "" {
			v.ErrorLog = logText(l)
		}
	}
	// The strongest evidence first: a request nginx ended on the client's
	// or its own account (499, 408, 444) over an upstream failure before
	// it (a retry the client did not wait for); an upstream failure over
	// the close it led to; a decision nginx logged over a close that
	// looks healthy.
	upLog := upstreamLog(in)
	termRC := int64(0)
	if in.term != nil {
		termRC = num(*in.term, groupTerminate, "rc")
	}
	switch {
	case in.term != nil && in.next != nil && (termRC == 499 || termRC == 408 || termRC == 444):
		primary = in.term
		e.terminated(in, &v, limit)
	case in.next != nil:
		primary = in.next
		e.upstreamBefore(in, &v)
	case in.stream != nil:
		primary = in.stream
		e.stream(in, &v)
	case in.term != nil:
		primary = in.term
		e.terminated(in, &v, limit)
	case in.tunnel != nil:
		primary = in.tunnel
		if !e.tunneled(in, &v) {
			return nil
		}
	case in.close != nil && limit == "" && upLog == nil:
		primary = in.close
		if !e.closed(in, &v) {
			return nil
		}
	case limit != "":
		primary = &in.logs[0]
		e.logRequest(*primary, &v)
		v.Initiator, v.Cause = Nginx, limit
		if v.Status == 0 {
			v.Status = 503
		}
		v.Summary = fmt.Sprintf("nginx refused the request (%s)", limit)
	case upLog != nil:
		primary = upLog
		e.logRequest(*primary, &v)
		v.Side, v.Initiator, v.Cause = Upstream, Upstream, CauseFIN
		v.Peer = str(*primary, "log request", "peer")
		v.Phase = PhaseUpstreamBody
		if strings.Contains(str(*primary, groupLog, "action"), "header") {
			v.Phase = PhaseUpstreamHeader
		}
		v.Summary = "upstream closed the connection (FIN) " + phaseWhile(v.Phase) + "; nginx ended the response there and closed the client connection"
	case len(in.errors) > 0:
		primary = &in.errors[0]
		e.errorOnly(in, &v)
	case in.healthy != nil:
		primary = in.healthy
		if !e.healthyEvent(*in.healthy, &v) {
			return nil
		}
	default:
		return nil
	}
	if v.Peer == "" && in.close != nil && v.Side == Client {
		v.Peer = str(*in.close, groupClose, "client")
	}
	if v.Peer == "" && in.term != nil && v.Side == Client {
		v.Peer = str(*in.term, groupTerminate, "client")
	}
	v.Time = primary.Time
	v.Stack = primary.Stack
	v.DecidedAt, v.Via = decided(primary.Stack)
	if f := shutdownFrame(in); f != nil && !v.Healthy {
		// The worker was shutting down (a reload or quit) and its
		// worker_shutdown_timeout closed what was still open: the flags
		// the timer set (c->close, c->error) are nginx's, not the
		// client's.
		v.Initiator, v.Cause = Nginx, CauseShutdownTimeout
		v.Summary = "nginx closed the connection at worker_shutdown_timeout: the worker was shutting down (a reload or quit) " + phaseWhile(v.Phase)
		v.Summary = strings.TrimSpace(v.Summary)
		v.DecidedAt, v.Via = f, ""
	} else if v.DecidedAt == nil || dispatch[symbols.BaseName(v.DecidedAt.Symbol)] {
		// The handler that decided returned, or tail-called the close:
		// name it from the event handler that was running.
		if h := e.decidingHandler(in, primary); h != "" {
			via := ""
			if v.DecidedAt != nil {
				via = symbols.BaseName(v.DecidedAt.Symbol)
			}
			v.DecidedAt, v.Via = &output.Frame{Symbol: h}, via
		}
	}
	if !v.Healthy {
		e.verdicts++
	}
	return []output.Verdict{v}
}

// formatVerb is a printf verb of nginx's (%V, %ui, %03ui, %*s).
var formatVerb = regexp.MustCompile(`%[-0-9.*]*[a-zA-Z]+`)

// logText is an error-log line as its format string shows it, with its
// arguments (not read) shown as "…".
func logText(l output.Event) string {
	text := formatVerb.ReplaceAllString(str(l, groupLog, "fmt"), "…")
	if errno := num(l, groupLog, "err"); errno > 0 && errno < 4096 {
		// As nginx writes it: "recv() failed (104: Connection reset by peer)".
		msg := syscall.Errno(errno).Error()
		if msg != "" {
			msg = strings.ToUpper(msg[:1]) + msg[1:]
		}
		text += fmt.Sprintf(" (%d: %s)", errno, msg)
	}
	if a := str(l, groupLog, "action"); a != "" {
		text += " while " + a
	}
	return text
}

// upstreamLog is the incident's "upstream prematurely closed
// connection" line, which is all nginx leaves of an upstream FIN after
// the response header was sent: it ends the response and closes the
// client connection as if the response were complete.
func upstreamLog(in *incident) *output.Event {
	for i, l := range in.logs {
		if strings.HasPrefix(str(l, groupLog, "fmt"), "upstream prematurely closed connection") {
			return &in.logs[i]
		}
	}
	return nil
}

// logRequest fills the request of an HTTP error-log line.
func (e *Engine) logRequest(l output.Event, v *output.Verdict) {
	if e.handler(l, groupLog, "lh") != "ngx_http_log_error" {
		return
	}
	v.Method, v.URI = str(l, "log request", "method"), str(l, "log request", "uri")
	v.Status = int(num(l, "log request", "status"))
}

// limitLog says whether limit_req or limit_conn logged a rejection.
func (e *Engine) limitLog(in *incident) string {
	for _, l := range in.logs {
		f := str(l, groupLog, "fmt")
		switch {
		case strings.HasPrefix(f, "limiting requests"):
			return CauseLimitReq
		case strings.HasPrefix(f, "limiting connections"):
			return CauseLimitConn
		}
	}
	return ""
}

// errnoOf is the errno of the incident's socket error on the connection
// numbered conn (0: any), and its text.
func errnoOf(in *incident, conn uint64) (int, string) {
	for _, ev := range in.errors {
		if conn == 0 || uint64(num(ev, groupError, "conn")) == conn {
			return int(num(ev, groupError, "err")), str(ev, groupError, "text")
		}
	}
	return 0, ""
}

// failed says what failed: "recv() failed (errno 104)", or the errno's
// text where the copy of ngx_connection_error that ran had its text
// optimized out.
func failed(text string, errno int) string {
	if text == "" {
		return fmt.Sprintf("errno %d, %s", errno, syscall.Errno(errno).Error())
	}
	return fmt.Sprintf("%s (errno %d)", text, errno)
}

func errnoCause(errno int) string {
	switch errno {
	case errnoECONNRESET, errnoEPIPE:
		return CauseRST
	case errnoECONNREFUSED:
		return CauseRefused
	case errnoETIMEDOUT:
		return CauseTimeout
	}
	return CauseSocketError
}

// upstreamBefore explains an upstream that failed before nginx committed
// to its response: ngx_http_upstream_next ran.
func (e *Engine) upstreamBefore(in *incident, v *output.Verdict) {
	x := *in.next
	v.Side, v.Initiator = Upstream, Upstream
	v.PeerConn = uint64(num(x, groupNext, "uconn"))
	v.Peer = str(x, groupNext, "peer")
	v.Method, v.URI = str(x, groupNext, "method"), str(x, groupNext, "uri")
	ft := num(x, groupNext, "ft_type")
	sent := num(x, groupNext, "request_sent") != 0
	v.Status = 502
	v.Phase = PhaseUpstreamHeader
	if !sent {
		v.Phase = PhaseUpstreamSend
	}
	errno, text := errnoOf(in, v.PeerConn)
	v.Errno = errno
	switch {
	case ft&ftTimeout != 0:
		v.Cause, v.Status = CauseTimeout, 504
		if num(x, "next peer", "wtimedout") != 0 && !sent {
			v.Phase = PhaseUpstreamConnect
			v.Summary = "upstream did not accept the connection in time (proxy_connect_timeout)"
		} else {
			v.Summary = "upstream did not answer in time (proxy_read_timeout)"
		}
	case ft&ftInvalidHeader != 0:
		v.Cause = CauseInvalidResponse
		v.Summary = "upstream sent an invalid response header"
	case errno != 0:
		v.Cause = errnoCause(errno)
		if strings.HasPrefix(text, "connect()") {
			v.Phase = PhaseUpstreamConnect
		}
		switch v.Cause {
		case CauseRST:
			v.Summary = "upstream sent RST " + phaseWhile(v.Phase)
		case CauseRefused:
			v.Summary = "upstream refused the connection"
		default:
			v.Summary = fmt.Sprintf("upstream connection failed: %s %s", failed(text, errno), phaseWhile(v.Phase))
		}
	case num(x, "next peer", "eof") != 0:
		v.Cause = CauseFIN
		v.Summary = "upstream closed the connection (FIN) " + phaseWhile(v.Phase)
	default:
		v.Cause = CauseSocketError
		v.Summary = "upstream failed " + phaseWhile(v.Phase)
	}
	if num(x, groupNext, "tries") > 1 && num(x, groupNext, "next_upstream")&ft != 0 {
		// Not the last try: nginx went on to the next server, whose
		// answer is not known here.
		v.Status = 0
		v.Summary += "; nginx tried the next upstream server"
		return
	}
	v.Summary += fmt.Sprintf("; nginx answered %d", v.Status)
}

func phaseWhile(phase string) string {
	switch phase {
	case PhaseUpstreamConnect:
		return "while nginx was connecting"
	case PhaseUpstreamSend:
		return "while nginx was sending the request"
	case PhaseUpstreamHeader:
		return "before the response header"
	case PhaseUpstreamBody:
		return "in the middle of the response body"
	case PhaseRequestHeader:
		return "while nginx read the request header"
	case PhaseRequestBody:
		return "while nginx read the request body"
	case PhaseResponse:
		return "while nginx sent the response"
	case PhaseWaitingUpstream:
		return "while nginx waited for the upstream"
	case PhaseTLSHandshake:
		return "during the TLS handshake"
	case PhaseIdle:
		return "on an idle keepalive connection"
	case PhaseWaitingRequest:
		return "before sending a request"
	case PhaseTunnel:
		return "in an upgraded (websocket) tunnel"
	case PhaseHTTP2:
		return "on an HTTP/2 connection"
	}
	return ""
}

// terminated explains a request that ngx_http_terminate_request ended.
func (e *Engine) terminated(in *incident, v *output.Verdict, limit string) {
	t := *in.term
	g := groupTerminate
	rc := num(t, g, "rc")
	v.Method, v.URI = str(t, g, "method"), str(t, g, "uri")
	status := num(t, g, "status")
	if rc > 0 && (status == 0 || num(t, g, "sent") == 0) {
		status = rc
	}
	v.Status = int(status)
	upstream := readable(t, "terminate upstream", "peer")
	if upstream {
		v.Peer = ""
	}
	phase := phaseOf(e.handler(t, g, "rh"))
	if wh := phaseOf(e.handler(t, g, "wh")); wh == PhaseResponse || phase == "" {
		phase = wh
	}
	if num(t, "terminate write", "timedout") != 0 {
		phase = PhaseResponse
	}
	v.Phase = phase
	clientErrno, clientText := errnoOf(in, in.key.conn)
	switch {
	case rc == 444 && limit != "":
		v.Initiator, v.Cause = Nginx, limit
		v.Summary = fmt.Sprintf("nginx closed the connection without a response (%s with status 444)", limit)
	case rc == 444:
		v.Initiator, v.Cause = Nginx, CauseReturn444
		v.Summary = "nginx closed the connection without a response (return 444)"
	case in.h2 != nil:
		v.Initiator, v.Cause, v.Phase = Client, CauseH2ResetStream, PhaseHTTP2
		v.Summary = fmt.Sprintf("client reset HTTP/2 stream %d (RST_STREAM) %s", num(*in.h2, groupH2Reset, "sid"), phaseWhile(phase))
	case rc == 499:
		v.Initiator, v.Cause = Client, CauseFIN
		if num(t, "terminate read", "error") != 0 {
			v.Cause = CauseRST
		}
		if upstream {
			v.Phase = PhaseWaitingUpstream
		}
		v.Summary = "client closed first " + phaseWhile(v.Phase)
		if in.gaveUp != nil {
			v.PeerConn = uint64(num(*in.gaveUp, groupGaveUp, "uconn"))
		}
		if p := str(t, "terminate upstream", "peer"); p != "" {
			v.Summary = "client closed first while nginx waited for upstream " + p
			if v.PeerConn != 0 {
				v.Summary += fmt.Sprintf(" (*%d)", v.PeerConn)
			}
		}
	case rc == 408:
		v.Initiator, v.Cause = Client, CauseTimeout
		switch v.Phase {
		case PhaseRequestBody:
			v.Summary = "client sent the request body too slowly (client_body_timeout)"
		case PhaseResponse:
			v.Summary = "client stopped reading the response (send_timeout)"
		default:
			v.Summary = "client timed out " + phaseWhile(v.Phase)
		}
	case clientErrno != 0:
		v.Initiator, v.Cause, v.Errno = Client, errnoCause(clientErrno), clientErrno
		v.Summary = fmt.Sprintf("client connection failed: %s %s", failed(clientText, clientErrno), phaseWhile(v.Phase))
		if v.Cause == CauseRST {
			v.Summary = "client sent RST " + phaseWhile(v.Phase)
		}
	case upstream && num(t, "terminate upstream", "header_sent") != 0 && (num(t, "terminate upstream", "upstream_eof") != 0 || num(t, "terminate upstream", "upstream_error") != 0):
		v.Side, v.Initiator, v.Phase = Upstream, Upstream, PhaseUpstreamBody
		v.Peer = str(t, "terminate upstream", "peer")
		if errno, _ := errnoOf(in, 0); errno != 0 {
			v.Errno, v.Cause = errno, errnoCause(errno)
			v.PeerConn = upstreamConn(in)
		} else {
			v.Cause = CauseFIN
		}
		verb := "closed the connection (FIN)"
		if v.Cause == CauseRST {
			verb = "sent RST"
		}
		v.Summary = fmt.Sprintf("upstream %s in the middle of the response body; nginx closed the client connection", verb)
	case num(t, g, "error") != 0 || num(t, "terminate read", "eof") != 0:
		v.Initiator, v.Cause = Client, CauseFIN
		v.Summary = "client closed the connection " + phaseWhile(v.Phase)
	default:
		v.Initiator, v.Cause = Nginx, CauseHandlerError
		v.Summary = fmt.Sprintf("nginx ended the request after an error (rc %d)", rc)
	}
}

// upstreamConn is the *N of an upstream connection with a socket error.
func upstreamConn(in *incident) uint64 {
	for _, ev := range in.errors {
		if c := uint64(num(ev, groupError, "conn")); c != in.key.conn {
			return c
		}
	}
	return 0
}

// closed explains a client connection that closed abnormally with no
// request ended before (ngx_http_close_connection alone). A close that
// is healthy after all is counted, and returns false, or with All true
// with v its healthy verdict.
func (e *Engine) closed(in *incident, v *output.Verdict) bool {
	c := *in.close
	g := groupClose
	phase := phaseOf(e.handler(c, g, "rh"))
	v.Phase = phase
	errno, text := errnoOf(in, in.key.conn)
	readErr := num(c, "close read", "error") != 0
	eof := num(c, "close read", "eof") != 0
	timedout := num(c, "close read", "timedout") != 0 || num(c, "close write", "timedout") != 0 || num(c, g, "timedout") != 0
	goawayCode, goaway := goawayError(in)
	switch {
	case goaway && goawayCode == 0 && errno == 0:
		return e.healthyClose(v, HealthyH2ClientGoaway, Client, "client ended the HTTP/2 connection with GOAWAY (NO_ERROR) and closed it")
	case goaway && goawayCode != 0:
		v.Initiator, v.Cause, v.Phase = Client, CauseH2Goaway, PhaseHTTP2
		v.Summary = fmt.Sprintf("client ended the HTTP/2 connection with GOAWAY, error %s", h2ErrorName(goawayCode))
	case phase == PhaseLingeringClose && errno == 0:
		return e.healthyClose(v, HealthyLingering, Nginx, "nginx closed the connection after a lingering close (lingering_close), which the client's FIN or lingering_timeout ended")
	case phase == PhaseHTTP2 && errno == 0 && !readErr && num(c, "close write", "error") == 0:
		// An HTTP/2 connection ends with the client's FIN, or an idle
		// timeout, outside any stream: HTTP/2's keepalive. (Its
		// c->error is set by ngx_http_v2_finalize_connection.)
		if timedout {
			return e.healthyClose(v, HealthyKeepaliveTimeout, Nginx, "nginx closed the idle HTTP/2 connection (keepalive_timeout)")
		}
		return e.healthyClose(v, HealthyKeepaliveClosed, Client, "client closed its idle HTTP/2 connection")
	case errno != 0:
		v.Initiator, v.Cause, v.Errno = Client, errnoCause(errno), errno
		v.Summary = fmt.Sprintf("client connection failed: %s %s", failed(text, errno), phaseWhile(phase))
		if v.Cause == CauseRST {
			v.Summary = "client sent RST " + phaseWhile(phase)
		}
	case phase == PhaseTLSHandshake && readErr:
		v.Initiator, v.Cause = Client, CauseTLS
		v.Summary = "TLS handshake failed (the client sent what is not TLS, or TLS nginx refused)"
	case num(c, g, "timedout") != 0 && num(c, "close read", "timedout") == 0 && num(c, "close write", "timedout") == 0:
		// c->timedout without a timer that fired: nginx's own close
		// (NGX_HTTP_CLOSE, return 444), whose request was not seen.
		v.Initiator, v.Cause = Nginx, CauseReturn444
		v.Summary = "nginx closed the connection without a response (444)"
	case timedout:
		v.Initiator, v.Cause = Client, CauseTimeout
		switch phase {
		case PhaseRequestHeader:
			v.Summary = "client sent the request header too slowly (client_header_timeout)"
			v.Status = 408
		case PhaseWaitingRequest:
			v.Summary = "client sent no request in time (client_header_timeout)"
		default:
			v.Summary = "client timed out " + phaseWhile(phase)
		}
	case eof && phase == PhaseWaitingRequest:
		v.Initiator, v.Cause = Client, CauseNoRequest
		v.Summary = "client closed the connection without sending a request"
	case eof:
		v.Initiator, v.Cause = Client, CauseFIN
		v.Summary = "client sent FIN " + phaseWhile(phase) + "; nginx closed it"
	default:
		v.Initiator, v.Cause = Client, CauseSocketError
		v.Summary = "the connection failed " + phaseWhile(phase)
	}
	return true
}

// tunneled explains an upgraded (websocket) tunnel's end, seen where
// ngx_http_upstream_process_upgraded finalizes it: which side's flags
// ended it, or the socket error one side got. A tunnel the client
// closed, which is how tunnels end, is counted healthy, as closed counts
// its healthy closes.
func (e *Engine) tunneled(in *incident, v *output.Verdict) bool {
	t := *in.tunnel
	g := groupTunnel
	v.Phase = PhaseTunnel
	v.Method, v.URI, v.Status = str(t, g, "method"), str(t, g, "uri"), int(num(t, g, "status"))
	v.PeerConn = uint64(num(t, g, "uconn"))
	clientPeer, upstreamPeer := str(t, g, "client"), str(t, g, "peer")
	v.Peer = clientPeer
	upstreamSide := func() { v.Side, v.Initiator, v.Peer = Upstream, Upstream, upstreamPeer }
	clientErr, clientText := errnoOf(in, in.key.conn)
	upErr, upText := errnoOf(in, v.PeerConn)
	switch {
	case upErr != 0:
		upstreamSide()
		v.Errno, v.Cause = upErr, errnoCause(upErr)
		v.Summary = "upstream connection failed: " + failed(upText, upErr) + " " + phaseWhile(PhaseTunnel)
		if v.Cause == CauseRST {
			v.Summary = "upstream sent RST " + phaseWhile(PhaseTunnel)
		}
	case num(t, "tunnel upstream", "rtimedout") != 0 || num(t, "tunnel upstream", "wtimedout") != 0:
		upstreamSide()
		v.Cause = CauseTimeout
		v.Summary = "upstream was silent too long " + phaseWhile(PhaseTunnel) + " (proxy_read_timeout or proxy_send_timeout)"
	case clientErr != 0:
		v.Initiator, v.Errno, v.Cause = Client, clientErr, errnoCause(clientErr)
		v.Summary = "client connection failed: " + failed(clientText, clientErr) + " " + phaseWhile(PhaseTunnel)
		if v.Cause == CauseRST {
			v.Summary = "client sent RST " + phaseWhile(PhaseTunnel)
		}
	case num(t, "tunnel client", "timedout") != 0:
		v.Initiator, v.Cause = Client, CauseTimeout
		v.Summary = "client stopped reading " + phaseWhile(PhaseTunnel) + " (send_timeout)"
	case num(t, "tunnel client", "eof") != 0:
		return e.healthyClose(v, HealthyTunnelClosed, Client, "client closed the tunnel (FIN); nginx closed the upstream connection")
	case num(t, "tunnel upstream", "eof") != 0:
		upstreamSide()
		v.Cause = CauseFIN
		v.Summary = "upstream closed the upgraded (websocket) tunnel (FIN); nginx closed the client connection"
	default:
		v.Initiator, v.Cause = Nginx, CauseHandlerError
		v.Summary = "nginx ended the tunnel (an error of its own, e.g. out of memory or a failed event operation)"
	}
	return true
}

// stream explains a stream-module session that ended with a status other
// than 200.
func (e *Engine) stream(in *incident, v *output.Verdict) {
	s := *in.stream
	v.Phase = PhaseStream
	v.Status = int(num(s, groupStream, "rc"))
	v.Peer = str(s, groupStream, "client")
	errno, text := errnoOf(in, 0)
	uc := upstreamConn(in)
	switch {
	case uc != 0:
		v.Side, v.Initiator, v.PeerConn = Upstream, Upstream, uc
		v.Peer = str(s, groupStream, "peer")
		v.Errno, v.Cause = errno, errnoCause(errno)
		v.Summary = "stream upstream failed: " + failed(text, errno)
		if v.Cause == CauseRST {
			v.Summary = "stream upstream sent RST"
		}
	case errno != 0:
		v.Initiator, v.Errno, v.Cause = Client, errno, errnoCause(errno)
		v.Summary = "stream client connection failed: " + failed(text, errno)
	default:
		v.Initiator, v.Cause = Nginx, CauseHandlerError
		v.Summary = fmt.Sprintf("stream session ended with status %d", v.Status)
	}
}

// errorOnly explains socket errors with no request or close seen: a
// client reset while the connection lives on, or an upstream error on a
// stream.
func (e *Engine) errorOnly(in *incident, v *output.Verdict) {
	first := in.errors[0]
	errno := int(num(first, groupError, "err"))
	text := str(first, groupError, "text")
	v.Errno, v.Cause = errno, errnoCause(errno)
	v.Phase = phaseOf(e.handler(first, groupError, "rh"))
	who := Client
	if c := uint64(num(first, groupError, "conn")); c != in.key.conn {
		who = Upstream
		v.Side, v.PeerConn = Upstream, c
	}
	v.Initiator = who
	v.Peer = str(first, groupError, "peer")
	if v.Cause == CauseRST {
		v.Summary = strings.TrimSpace(who + " sent RST " + phaseWhile(v.Phase))
		return
	}
	v.Summary = strings.TrimSpace(fmt.Sprintf("%s connection failed: %s %s", who, failed(text, errno), phaseWhile(v.Phase)))
}

// goawayError is the error code of the client's GOAWAY, when it sent one
// whose payload the buffer held.
func goawayError(in *incident) (uint32, bool) {
	if in.goaway == nil {
		return 0, false
	}
	g := *in.goaway
	pos, end := uint64(num(g, groupH2Goaway, "pos")), uint64(num(g, groupH2Goaway, "end"))
	if end < pos || end-pos < 8 || !readable(g, groupH2Goaway, "e3") {
		return 0, false
	}
	var code uint32
	for _, name := range []string{"e0", "e1", "e2", "e3"} {
		code = code<<8 | uint32(num(g, groupH2Goaway, name)&0xff)
	}
	return code, true
}

// h2ErrorName names an HTTP/2 error code (RFC 9113, section 7).
func h2ErrorName(code uint32) string {
	names := []string{"NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED",
		"FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"}
	if int(code) < len(names) {
		return fmt.Sprintf("%s (%d)", names[code], code)
	}
	return fmt.Sprintf("%#x", code)
}

// shutdownFrame is ngx_shutdown_timer_handler's frame where an event of
// the incident ran under it, nil otherwise.
func shutdownFrame(in *incident) *output.Frame {
	events := []*output.Event{in.term, in.close}
	for i := range in.errors {
		events = append(events, &in.errors[i])
	}
	for _, ev := range events {
		if ev == nil || ev.Stack == nil {
			continue
		}
		for _, f := range ev.Stack.Frames {
			if symbols.BaseName(f.Symbol) == "ngx_shutdown_timer_handler" {
				return &f
			}
		}
	}
	return nil
}

// dispatch are nginx's event loop and handler dispatchers: a decision
// seen from one of them was made by the handler it ran.
var dispatch = map[string]bool{
	"ngx_event_expire_timers":       true,
	"ngx_epoll_process_events":      true,
	"ngx_process_events_and_timers": true,
	"ngx_event_process_posted":      true,
	"ngx_http_request_handler":      true,
	"ngx_http_upstream_handler":     true,
}

// decidingHandler names the event handler that was running at the
// primary event: the request's or upstream's, else the connection's.
func (e *Engine) decidingHandler(in *incident, primary *output.Event) string {
	g := groupOf(*primary)
	var names []string
	switch g {
	case groupNext:
		names = []string{e.handler(*primary, "next handlers", "rh"), e.handler(*primary, "next handlers", "wh")}
		if num(*primary, "next peer", "wtimedout") != 0 {
			names[0], names[1] = names[1], names[0]
		}
	case groupTerminate:
		names = []string{e.handler(*primary, g, "rh"), e.handler(*primary, g, "wh")}
		if num(*primary, "terminate write", "timedout") != 0 {
			names[0], names[1] = names[1], names[0]
		}
	case groupClose, groupError, groupStream, groupHealthy:
		names = []string{e.handler(*primary, g, "rh")}
	}
	for _, n := range names {
		if n != "" && !dispatch[n] && !strings.HasSuffix(n, "_empty_handler") && n != "ngx_http_block_reading" {
			return n
		}
	}
	return ""
}

// machinery are nginx's generic close, finalize and error functions: the
// code that decided is the first frame outside them.
var machinery = map[string]bool{
	"ngx_http_close_connection":          true,
	"ngx_close_connection":               true,
	"ngx_http_close_request":             true,
	"ngx_http_free_request":              true,
	"ngx_http_terminate_request":         true,
	"ngx_http_finalize_request":          true,
	"ngx_http_finalize_connection":       true,
	"ngx_http_upstream_finalize_request": true,
	"ngx_http_upstream_next":             true,
	"ngx_connection_error":               true,
	"ngx_log_error_core":                 true,
	"ngx_stream_finalize_session":        true,
	"ngx_stream_proxy_finalize":          true,
	"ngx_stream_close_connection":        true,
	"ngx_http_run_posted_requests":       true,
}

// decided returns the first frame outside nginx's close machinery, and
// the function it was called from.
func decided(st *output.Stack) (*output.Frame, string) {
	if st == nil {
		return nil, ""
	}
	for i, f := range st.Frames {
		if f.Lua != nil || f.Symbol == "" || machinery[symbols.BaseName(f.Symbol)] {
			continue
		}
		d := f
		via := ""
		for _, g := range st.Frames[i+1:] {
			if g.Symbol != "" && g.Lua == nil {
				via = symbols.BaseName(g.Symbol)
				break
			}
		}
		return &d, via
	}
	return nil, ""
}
