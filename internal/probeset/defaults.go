package probeset

// eventFlags reads eof, timedout and error of an event.
func eventFlags(ev, group string) []Value {
	return []Value{
		{Name: "eof", Expr: ev + "->eof", Group: group},
		{Name: "timedout", Expr: ev + "->timedout", Group: group},
		{Name: "error", Expr: ev + "->error", Group: group},
	}
}

// connection reads what identifies a connection and its close flags.
func connection(c, group string) []Value {
	vs := []Value{
		{Name: "conn", Expr: c + "->number", Group: group, Display: Connection},
		{Name: "role", Expr: c + "->listening", Group: group, Display: Role},
	}
	vs = append(vs, eventFlags(c+"->read", group+" read")...)
	vs = append(vs, eventFlags(c+"->write", group+" write")...)
	return append(vs,
		Value{Name: "error", Expr: c + "->error", Group: group + " conn"},
		Value{Name: "timedout", Expr: c + "->timedout", Group: group + " conn"},
	)
}

// CloseStacks probes the places where nginx closes connections, with the
// connection's flags and the stack that led there.
func CloseStacks(bin interface{ HasFunction(string) bool }) []Spec {
	var out []Spec
	for _, fn := range []string{"ngx_http_close_connection", "ngx_close_connection"} {
		if bin.HasFunction(fn) {
			out = append(out, Spec{Function: fn, Values: connection("c", "close"), Stack: true})
		}
	}
	return out
}

// Default is the probe set used when the user names none: what explains
// a close, at the three places the incident notes needed.
func Default() []Spec {
	finalize := []Value{
		{Name: "rc", Expr: "rc", Group: "request"},
		{Name: "status", Expr: "r->headers_out.status", Group: "request"},
		{Name: "client", Expr: "r->connection->addr_text", Group: "request"},
		{Name: "request", Expr: "r->request_line", Group: "request"},
	}
	finalize = append(finalize, connection("r->connection", "client")...)
	finalize = append(finalize, connection("r->upstream->peer.connection", "upstream")...)

	recvConn := []Value{
		{Name: "conn", Expr: "c->number", Group: "recv", Display: Connection},
		{Name: "log", Expr: "c->log->connection", Group: "recv", Display: Connection},
		{Name: "role", Expr: "c->listening", Group: "recv", Display: Role},
	}
	recvRet := append([]Value{
		{Name: "ret", Expr: "$retval", Group: "recv"},
		{Name: "size", Expr: "size", Group: "recv"},
	}, recvConn...)
	recvRet = append(recvRet,
		Value{Name: "eof", Expr: "c->read->eof", Group: "read"},
		Value{Name: "error", Expr: "c->read->error", Group: "read"},
	)

	hs := "((ngx_connection_t *) rev->data)"
	handshake := []Value{
		{Name: "conn", Expr: hs + "->number", Group: "handshake", Display: Connection},
		{Name: "client", Expr: hs + "->addr_text", Group: "handshake"},
		{Name: "role", Expr: hs + "->listening", Group: "handshake", Display: Role},
	}
	handshake = append(handshake, eventFlags("rev", "read")...)

	return []Spec{
		{Function: "ngx_http_finalize_request", Values: finalize},
		// Entry only saves c and size for the return, which reports both
		// with the result; one event per read instead of two.
		{Function: "ngx_unix_recv", Return: true, Values: recvRet},
		{Function: "ngx_http_ssl_handshake", Values: handshake},
	}
}
