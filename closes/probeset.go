package closes

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// Name is the probe set's name in messages (file:line:col).
const Name = "closes.ngxp"

// The groups of the probe set's events: each probe prints one label
// first, which the Engine dispatches on.
const (
	groupClose     = "close"
	groupTerminate = "terminate"
	groupError     = "error"
	groupNext      = "next"
	groupLog       = "log"
	groupH2Reset   = "h2 rst"
	groupStream    = "stream"
	groupTunnel    = "tunnel"
	groupGaveUp    = "gave up"
	groupH2Goaway  = "h2 goaway"
	groupHealthy   = "healthy"
)

// HealthyAggregation is the aggregation that counts healthy closes in the
// kernel, keyed by the connection's idle, read eof and read timedout bits.
const HealthyAggregation = "healthy"

// KeepaliveLimitAggregation counts the healthy closes of a keepalive
// connection nginx ended after a complete response, not its first
// (keepalive_requests or keepalive_time reached): on a busy gateway,
// most of the closes after a response.
const KeepaliveLimitAggregation = "healthy_keepalive_limit"

// abnormal is true at ngx_http_close_connection when the connection did
// not end healthily: an error, a timeout or an EOF outside an idle
// keepalive wait, or nginx's own close (444 sets c->timedout).
const abnormal = `c->error || c->timedout || c->read->error || c->write->error || c->write->timedout || (!c->idle && (c->read->eof || c->read->timedout))`

// countHealthy counts healthy closes in the kernel, by kind: nothing
// reaches user space for them.
const countHealthy = `
ngx_http_close_connection / !(` + abnormal + `) && (c->idle || c->requests <= 1) / {
	@healthy[c->idle, c->read->eof, c->read->timedout] = count()
}
ngx_http_close_connection / !(` + abnormal + `) && !c->idle && c->requests > 1 / {
	@healthy_keepalive_limit = count()
}
`

// printHealthy sends every healthy close to user space instead (closes
// --all): one event per connection, for a verdict marked healthy.
const printHealthy = `
ngx_http_close_connection / !(` + abnormal + `) / {
	print("healthy", conn = c->number, client = c->addr_text, idle = c->idle, eof = c->read->eof, timedout = c->read->timedout, requests = c->requests, rh = c->read->handler)
}
`

const core = `
ngx_http_close_connection / ` + abnormal + ` / {
	print("close", conn = c->number, client = c->addr_text, idle = c->idle, error = c->error, timedout = c->timedout, requests = c->requests, sent = c->sent, rh = c->read->handler, wh = c->write->handler)
	print("close read", eof = c->read->eof, error = c->read->error, timedout = c->read->timedout)
	print("close write", error = c->write->error, timedout = c->write->timedout)
	stack
}
ngx_http_terminate_request {
	print("terminate", rc, conn = r->connection->number, client = r->connection->addr_text, status = r->headers_out.status, method = r->method_name, uri = r->uri, sent = r->connection->sent, error = r->connection->error, rh = r->read_event_handler, wh = r->write_event_handler%s)
	print("terminate read", eof = r->connection->read->eof, error = r->connection->read->error, timedout = r->connection->read->timedout)
	print("terminate write", error = r->connection->write->error, timedout = r->connection->write->timedout)
	print("terminate upstream", peer = r->upstream->peer.name[0], header_sent = r->upstream->header_sent, upstream_eof = r->upstream->pipe->upstream_eof, upstream_error = r->upstream->pipe->upstream_error)
	stack
}
ngx_connection_error {
	print("error", conn = c->number, log = c->log->connection, err, text, peer = c->addr_text, client = c->listening, rh = c->read->handler)
	stack
}
ngx_http_upstream_next {
	print("next", ft_type, conn = r->connection->number, client = r->connection->addr_text, uconn = u->peer.connection->number, peer = u->peer.name[0], request_sent = u->request_sent, tries = u->peer.tries, next_upstream = u->conf->next_upstream, method = r->method_name, uri = r->uri)
	print("next handlers", rh = u->read_event_handler, wh = u->write_event_handler)
	print("next peer", eof = u->peer.connection->read->eof, error = u->peer.connection->read->error, rtimedout = u->peer.connection->read->timedout, wtimedout = u->peer.connection->write->timedout)
	stack
}
ngx_log_error_core / level <= 5 / {
	print("log", level, conn = log->connection, err, fmt, action = log->action, lh = log->handler)
	print("log request", method = ((ngx_http_log_ctx_t *) log->data)->request->method_name, uri = ((ngx_http_log_ctx_t *) log->data)->request->uri, status = ((ngx_http_log_ctx_t *) log->data)->request->headers_out.status, peer = ((ngx_http_log_ctx_t *) log->data)->request->upstream->peer.name[0])
	stack
}
`

const http2 = `
ngx_http_v2_state_rst_stream {
	print("h2 rst", conn = h2c->connection->number, sid = h2c->state.sid)
}
`

// goaway runs when a client sends GOAWAY (once per HTTP/2 connection at
// most, as it leaves): its error code is bytes 4-7 of the frame's payload
// at pos, read only when the buffer holds them (end - pos >= 8; else
// nginx saves the partial frame and comes back).
const goaway = `
ngx_http_v2_state_goaway {
	print("h2 goaway", conn = h2c->connection->number, pos = (ngx_uint_t) pos, end = (ngx_uint_t) end, e0 = pos[4], e1 = pos[5], e2 = pos[6], e3 = pos[7])
}
`

const stream = `
ngx_stream_finalize_session / rc != 200 / {
	print("stream", rc, conn = s->connection->number, client = s->connection->addr_text, peer = s->upstream->peer.name[0], rh = s->connection->read->handler)
	stack
}
`

// tunnel runs where a websocket (or any upgraded) tunnel ends
// (Sites.TunnelEnds, for %s).
const tunnel = `
%s {
	print("tunnel", conn = r->connection->number, client = r->connection->addr_text, uconn = r->upstream->peer.connection->number, peer = r->upstream->peer.name[0], method = r->method_name, uri = r->uri, status = r->headers_out.status)
	print("tunnel client", eof = r->connection->read->eof, error = r->connection->read->error, timedout = r->connection->write->timedout)
	print("tunnel upstream", eof = r->upstream->peer.connection->read->eof, error = r->upstream->peer.connection->read->error, rtimedout = r->upstream->peer.connection->read->timedout, wtimedout = r->upstream->peer.connection->write->timedout)
	stack
}
`

// gaveUp runs where nginx ends a request whose client gave up while it
// waited for the upstream (Sites.ClientGaveUp, for %s).
const gaveUp = `
%s {
	print("gave up", conn = r->connection->number, uconn = r->upstream->peer.connection->number)
}
`

// ProbeSet returns the probe-set script for an nginx that has the
// functions has reports: the HTTP/2 and stream parts only where nginx
// was built (or loads modules) with them, and the call sites' parts
// where sites has them. Healthy closes are counted in the kernel, or
// with all sent as events (one per connection: closes --all).
func ProbeSet(has func(string) bool, sites Sites, all bool) string {
	var b strings.Builder
	if all {
		b.WriteString(printHealthy)
	} else {
		b.WriteString(countHealthy)
	}
	h2 := ""
	if has("ngx_http_v2_state_rst_stream") {
		h2 = ", h2 = r->stream"
	}
	b.WriteString(strings.Replace(core, "%s", h2, 1))
	if h2 != "" {
		b.WriteString(http2)
	}
	if has("ngx_http_v2_state_goaway") {
		b.WriteString(goaway)
	}
	if has("ngx_stream_finalize_session") {
		b.WriteString(stream)
	}
	if len(sites.TunnelEnds) > 0 {
		b.WriteString(strings.Replace(tunnel, "%s", strings.Join(sites.TunnelEnds, ", "), 1))
	}
	if len(sites.ClientGaveUp) > 0 {
		b.WriteString(strings.Replace(gaveUp, "%s", strings.Join(sites.ClientGaveUp, ", "), 1))
	}
	return b.String()
}

// Sites are the call sites the probe set watches besides function
// entries, as probe points (FUNCTION+OFFSET): found in each nginx's code,
// since a line number would hold for one nginx version only.
type Sites struct {
	// TunnelEnds: where an upgraded (websocket) tunnel ends, the calls
	// from ngx_http_upstream_process_upgraded to
	// ngx_http_upstream_finalize_request; once per tunnel, never per
	// frame.
	TunnelEnds []string
	// ClientGaveUp: where nginx ends a request whose client closed while
	// it waited for the upstream (499), the calls from
	// ngx_http_upstream_check_broken_connection to
	// ngx_http_upstream_finalize_request: the upstream connection, closed
	// by the time the request terminates, is still there to name.
	ClientGaveUp []string
}

// FindSites returns the Sites of an nginx: every call and tail jump from
// one function to the other, found by decoding the caller's code
// (symbols.CallsTo). GCC merges a function's several calls that end it
// into one shared jump, which DWARF's call sites then give no argument
// for; the call instruction holds in every build. Sites are empty, with
// no error, when nginx has no upstream module; an error says which could
// not be found (the verdicts they add are then missing, not wrong).
func FindSites(img *symbols.Image) (Sites, error) {
	var s Sites
	var errs []error
	var err error
	if s.TunnelEnds, err = callPoints(img, "ngx_http_upstream_process_upgraded", "ngx_http_upstream_finalize_request"); err != nil {
		errs = append(errs, fmt.Errorf("websocket tunnels' ends are not watched: %w", err))
	}
	if s.ClientGaveUp, err = callPoints(img, "ngx_http_upstream_check_broken_connection", "ngx_http_upstream_finalize_request"); err != nil {
		errs = append(errs, fmt.Errorf("a 499's upstream connection is not named: %w", err))
	}
	return s, errors.Join(errs...)
}

// callPoints returns the probe points of caller's calls to callee.
func callPoints(img *symbols.Image, caller, callee string) ([]string, error) {
	if !img.HasFunction(caller) {
		return nil, nil
	}
	callers, err := img.Lookup(caller)
	if err != nil {
		return nil, err
	}
	callees, err := img.Lookup(callee)
	if err != nil {
		return nil, err
	}
	var points []string
	var errs []error
	for _, fn := range callers {
		sites, err := symbols.CallsTo(fn, callees)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range sites {
			points = append(points, s.Point())
		}
	}
	if len(points) == 0 {
		errs = append(errs, fmt.Errorf("no call from %s to %s found", caller, callee))
		return nil, errors.Join(errs...)
	}
	return points, errors.Join(errs...)
}
