// Package closes explains abnormal ends of nginx connections: who ended
// one (the client, the upstream or nginx itself), how (FIN, RST, a
// timeout, a TLS failure, return 444, limit_req, ...), what nginx was
// doing, and the code that decided. It is what "ngxprobe closes" prints.
//
// It has two halves. [ProbeSet] is a probe-set script (package script)
// that watches only where abnormal things happen, so that healthy traffic
// costs almost nothing:
//
//   - ngx_http_close_connection, once per client connection: a filter in
//     the kernel counts the healthy ends by kind (keepalive timeout,
//     client closed an idle keepalive connection, closed after the
//     response) and sends an event only when the connection's flags say
//     it ended abnormally (error, timedout, eof outside keepalive); with
//     all (closes --all) it sends the healthy ends too, which the engine
//     then makes verdicts marked healthy;
//   - ngx_http_terminate_request: a request ended with 444, 499, 408, an
//     error or a broken connection;
//   - ngx_connection_error: every socket error nginx handles, with errno;
//   - ngx_http_upstream_next: an upstream failed before its response was
//     committed (FIN, RST, refused, timeouts, an invalid header);
//   - ngx_log_error_core at warn and above: the error-log line of a
//     decision (limit_req, limit_conn, upstream prematurely closed);
//   - where nginx has them, HTTP/2's RST_STREAM and GOAWAY handlers and
//     the stream module's session end with a status other than 200;
//   - two call sites found in nginx's code ([FindSites]): where an
//     upgraded (websocket) tunnel ends, once per tunnel, never per frame;
//     and where nginx gives up a request whose client left while it
//     waited for the upstream, to name that upstream connection.
//
// A verdict under ngx_shutdown_timer_handler is nginx's own
// worker_shutdown_timeout, whatever flags the timer set.
//
// None of these runs for a healthy keepalive request. [Engine] then joins
// the events of one client connection (its *N, which upstream
// connections' errors are logged under too) into one [output.Verdict]
// per incident: when the client connection closes, or when no event has
// come for it for a short while (a 502 served on a connection that lives
// on).
package closes
