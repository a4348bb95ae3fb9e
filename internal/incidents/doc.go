// Package incidents reproduces, on loopback and against the real test nginx
// (internal/nginxtest), the classic "gateway closed the connection"
// incidents of a reverse proxy, so that tests can run ngxprobe against them.
//
// Each incident is a Scenario: an upstream server (already listening, a
// small Go TCP server scripted for the incident), the nginx server{} block
// that proxies to it (Scenario.HTTP) and a client (Scenario.Trigger). A
// constructor starts the upstream; t.Cleanup closes it, its connections and
// goroutines. Trigger runs the client once, bounded in time, and reports
// what the client and the upstream observed. Await/Check then find what
// nginx logged: the error-log line (with its "*N" connection number) and
// the access-log entry of that request.
//
//	s := incidents.ResetByPeer(t)
//	srv := nginxtest.Start(t, inst, nginxtest.Config{HTTP: s.HTTP})
//	// ... start ngxprobe on srv.MasterPID() ...
//	res := s.Trigger(t)
//	o := s.Check(t, srv, res) // o.Line.Conn == o.Access.Connection
//
// nginxtest's nginx.conf already has "error_log ... info", which the
// info-level incidents need.
//
// The scenarios, as nginx 1.22.1 logs them (Text is the error-log message
// without the ", client: ..." context):
//
//	WSSHalfClose          [info]  epoll_wait() reported that client prematurely closed connection,
//	                              so upstream connection is closed too while sending request to upstream
//	                              $status 499; client gets an RST, upstream a FIN
//	WSSBackendClose       nothing logged; $status 101; client gets 101, close_notify, FIN
//	ClientAbort499        [info]  same text as WSSHalfClose; $status 499
//	ResetByPeer           [info]  recv() failed (104: Connection reset by peer) while sending to client
//	                              $status 200
//	UpstreamMidBody       [error] upstream prematurely closed connection while reading upstream
//	                              $status 200, $body_bytes_sent 10
//	UpstreamBeforeHeader  [error] upstream prematurely closed connection while reading response header from upstream
//	                              $status 502
//
// The wss scenarios listen with "ssl proxy_protocol" and a self-signed
// ECDSA P-256 certificate made at run time; their client announces
// FakeClientIP:FakeClientPort in a PROXY v1 header, which nginx logs as
// "client: 203.0.113.7".
package incidents
