// Package otlp exports what ngxprobe traces to an OpenTelemetry
// Collector, as OTLP log records, over gRPC or HTTP: a fleet's verdicts
// land where its team already looks (Loki, Elastic, SigNoz, ...), not on
// one terminal. It is a third output.Printer beside Text and JSON, built
// on the OpenTelemetry Go SDK (sdk/log and its otlploggrpc and
// otlploghttp exporters; sdk/metric and otlpmetricgrpc or otlpmetrichttp
// for its own counts): no protobuf or transport of its own.
//
// A typical caller:
//
//	exp, err := otlp.New(ctx, otlp.Config{
//		Endpoint: "collector:4317", Protocol: otlp.GRPC, Insecure: true,
//		Resource: otlp.Resource{PID: masterPID, Attributes: map[string]string{"container.id": id}},
//		OnError:  func(err error) { fmt.Fprintln(os.Stderr, "ngxprobe:", err) },
//	})
//	if err != nil {
//		return err // errors.Is(err, otlp.ErrProtocol), otlp.ErrEndpoint
//	}
//	defer exp.Close(closeCtx) // flushes until closeCtx's deadline
//	var p output.Printer = exp
//
// # Back-pressure
//
// Nothing the Collector does reaches the caller. Event and Flip put the
// event in a bounded queue (Config.QueueSize, 4096) without waiting,
// in about a hundred nanoseconds: when the queue is full, the record is
// dropped and counted. One goroutine takes up to Config.BatchSize
// entries at a time, maps each to a record (so a full queue costs the
// caller no mapping; the caller must not change an event's values or
// stack once given), emits them through the SDK (which adds the resource
// and scope) into a processor that only keeps them, and exports them
// itself with the SDK exporter, synchronously. The SDK's BatchProcessor
// is not used: it drops silently, without an exact count.
//
// A batch that fails because the Collector cannot be reached (down,
// restarting, refusing connections, not answering in time) or asks to
// back off (gRPC Unavailable or ResourceExhausted, HTTP 429 or 503, ...)
// is retried, 250 ms apart growing to 2 s, for Config.RetryTimeout (30 s);
// gRPC's own reconnect backoff is capped at 2 s too, so export resumes
// within about 2 s of a Collector coming back. Meanwhile only that batch
// is held: the queue fills, and the records past it are dropped. Memory
// is bounded by QueueSize + BatchSize records.
//
// Every record is counted once, exported or dropped: after Close,
// Stats().Records = Exported + Dropped. Dropped counts a full queue, a
// batch that failed for good (after its retries, or at once for an
// answer such as 400 that a retry would not change), the records a
// Collector rejected in an OTLP partial success, and what is left at
// Close's deadline. Exactness ends where OTLP's acknowledgement does: a
// batch the Collector wrote but whose answer was lost (killed between
// the two) is counted dropped, or, if a retry goes through, received
// twice.
//
// Aggregates and Summary come at the end of a trace: they wait up to
// Config.ExitWait (5 s) for room rather than drop. The summary record is
// made when its turn to be exported comes, so its ngxprobe.dropped
// counts every record queued before it. Close(ctx) exports what is
// queued until ctx's deadline, drops the rest, shuts the SDK down, and
// returns an error wrapping ErrDropped when any record was dropped.
//
// The counts are an OTLP metric too, so that a backend sees the drops of
// a fleet without reading summaries: ngxprobe.otlp.records (unit
// {record}), a cumulative, monotonic sum with the attribute outcome =
// "exported" (Stats.Exported) or "dropped" (Stats.Dropped); their sum is
// the records done with, Records less those still queued. It is made
// with the SDK's metric pipeline and sent to the same Collector as the
// logs (same endpoint, protocol, TLS and headers; Config.Resource's
// resource, the records' scope): an observable counter, whose callback
// only loads the exporter's counters, read by a PeriodicReader every
// Config.MetricInterval (OTEL_METRIC_EXPORT_INTERVAL, else 10 s) on its
// own goroutine and connection, each export retried until the next one
// is due (1 to 30 s; OTEL_METRIC_EXPORT_TIMEOUT). So Event and Flip never
// wait for it, and it shares neither queue, connection nor failures with
// the logs. It is cumulative, whatever
// OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE says: an export that
// fails loses nothing, the next one carries the totals, and the drops of
// an outage show once the Collector is back. A failed export goes to
// OnError, wrapping ErrMetrics, the first of a run of failures only (a
// Collector with no metrics pipeline refuses every one). Close, once the
// queue is drained and the counts final, collects and exports them a
// last time, within ctx: unless its error wraps ErrMetrics, the
// Collector's last values are then Stats().Exported and Stats().Dropped.
// A negative MetricInterval or OTEL_METRICS_EXPORTER=none turns the
// metric off.
//
// # Configuration and the environment
//
// A Config field that is set wins over the environment; one left zero
// leaves the choice to the standard variables, then to the defaults:
//
//	Endpoint   OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT; localhost:4318 (HTTP) or :4317 (gRPC)
//	Protocol   OTEL_EXPORTER_OTLP_LOGS_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL; http/protobuf (the OTLP default)
//	Insecure   the endpoint URL's scheme, OTEL_EXPORTER_OTLP_[LOGS_]INSECURE; TLS
//	Headers    OTEL_EXPORTER_OTLP_[LOGS_]HEADERS
//	Timeout    OTEL_EXPORTER_OTLP_[LOGS_]TIMEOUT; 10 s per request
//	(TLS)      OTEL_EXPORTER_OTLP_[LOGS_]CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY
//	(gzip)     OTEL_EXPORTER_OTLP_[LOGS_]COMPRESSION
//	MetricInterval  OTEL_METRIC_EXPORT_INTERVAL; 10 s (OTEL_METRICS_EXPORTER=none: no metric)
//
// The protocol is read here; the rest by the SDK exporters. An HTTP
// endpoint URL without a path gets /v1/logs, as OTEL_EXPORTER_OTLP_ENDPOINT
// does; one with a path is used as it is.
//
// The metric goes where the logs go, with the same protocol and the same
// Config (Endpoint, Insecure, Headers, Timeout). An HTTP endpoint gets
// /v1/metrics for its path (a path ending in /v1/logs has /v1/metrics in
// its place; another one is the logs' own, and is not used). What Config
// leaves unset the SDK reads from the OTEL_EXPORTER_OTLP_METRICS_*
// variables and the common ones, as it reads the LOGS_ ones for the
// logs; and a LOGS_ variable (endpoint, insecure, headers, timeout,
// certificates, compression) for which neither the METRICS_ nor the
// common one is set applies to the metric too.
//
// The resource is OTEL_RESOURCE_ATTRIBUTES with, over it: service.name
// (Config.ServiceName, else OTEL_SERVICE_NAME or the one in
// OTEL_RESOURCE_ATTRIBUTES, else "nginx"), host.name (Config.HostName,
// else the one in OTEL_RESOURCE_ATTRIBUTES, else os.Hostname()), then
// Config.Resource: its Attributes (container.id, k8s.pod.name,
// k8s.node.name, ...) and its PID as process.pid, the traced master's.
// An event or flip with an Origin (--all-nginx) has its master's
// resource instead, that one with the Origin over it: process.pid
// (MasterPID), process.executable.path (Binary, in the master's mount
// namespace), container.id, k8s.pod.name, k8s.namespace.name and
// k8s.container.name, the empty ones left out (one small LoggerProvider
// per master seen, kept until Close). So a record's resource
// says which nginx, container and pod it came from, as a Collector's
// k8sattributes processor or a backend expects. Aggregations and the
// summary belong to the whole trace: they have Config.Resource's.
//
// # Mapping
//
// Every record has an event name (ngxprobe.event, ngxprobe.flip,
// ngxprobe.aggregate, ngxprobe.summary), a string body that is the
// record on one line, as the text printer shows it and escaped as it
// escapes, and typed attributes. Events and flips are INFO; a summary
// is WARN when events were lost or records dropped.
//
// An event: its time is the record's timestamp (the observed timestamp
// is when it was queued), and
//
//	ngxprobe.probe                  the probe as written
//	code.function                   the probed function's symbol (ngxprobe.clone: true for a GCC/LTO copy)
//	code.filepath, code.lineno      the first native stack frame with a source file, when there is a stack
//	ngxprobe.value.<group>.<name>   each value that is not hidden: int64, string or bool; a pointer as "0x..."
//	                                string, a uint64 past 2^63-1 as its decimal string. The group's words
//	                                come first ("client read", eof: ngxprobe.value.client.read.eof; no group:
//	                                ngxprobe.value.rc), since names repeat across groups; a repeat gets _2.
//	ngxprobe.unreadable             the <group>.<name> of the values that could not be read, which are left out
//	nginx.connection.number         *N: the value read from c->log->connection (the number the error log
//	                                shows, the client's for an upstream connection), else the first value
//	                                shown as a connection number
//	network.peer.address, .port     the first socket address read (ip:port, or unix:path with no port),
//	                                else the first c->addr_text (no port)
//	process.pid, thread.id          the worker and its thread
//	ngxprobe.messages               the printf lines
//	code.stacktrace                 the stack (below)
//
// A flip: its time, and ngxprobe.flip.field, .mode, .old, .new, .conn (the
// connection's own number), .role, .site (exact mode), .from and .to (diff
// mode); code.function, code.filepath and code.lineno are the code that
// flipped the field; nginx.connection.number is LoggedAs (the *N it is
// logged under), else Conn; network.peer.address and .port are Client;
// then process.pid, thread.id and code.stacktrace as for an event.
//
// The stack is text, one frame a line, as the text printer shows it:
// "5a3f2: ngx_http_finalize_request+0x1d (src/http/ngx_http_request.c:2510)",
// the module for code without DWARF, "[lua] auth.lua:12: in function
// 'check'" for a Lua frame, then "... truncated: reason" and "note: ..."
// lines. It is in code.stacktrace, the semantic conventions' attribute
// for a stack "in the natural representation for the language", rather
// than exception.stacktrace (nothing here is an exception, and backends
// show that one as an error). Text, not a structured attribute, because
// every backend stores, searches and shows a string, while arrays of maps
// are flattened or dropped by most of them; the JSON printer has the
// structured frames.
//
// Aggregations and the summary are log records too, not OTLP metrics:
// they are totals printed once when a trace ends, not a series, and one
// pipeline keeps one queue and one exact drop count (the exporter's own
// counts, above, are its only metric; a Collector can turn
// them into metrics, with the count connector, say). An aggregation is
// one record per row, rows merged and ordered as the other printers do,
// none for an aggregation without rows: ngxprobe.aggregate.name, .func,
// .value (the row's result for func), .count, .sum, .min, .max, and each
// key as ngxprobe.aggregate.key.<name> (typed as values are; unreadable
// keys listed in ngxprobe.unreadable); the body is "@name[keys]: value".
// The summary is one record: ngxprobe.hits, .events, .lost, .dropped and
// ngxprobe.probes, one "probe (function): hits H, events E, lost L" line
// per probe.
//
// Strings are sent as read, not escaped (only the body is), but made
// valid UTF-8 (U+FFFD for a byte that is not, as the JSON printer does):
// protobuf refuses a request with a string that is not. Redaction is the
// caller's (cmd/ngxprobe's converter), done before a printer sees a
// value.
package otlp
