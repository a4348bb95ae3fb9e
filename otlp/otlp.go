package otlp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/ngxprobe/ngxprobe/internal/output"
)

// Errors, checked with errors.Is.
var (
	// ErrClosed: the Exporter is used after Close.
	ErrClosed = errors.New("otlp: exporter closed")
	// ErrProtocol: the protocol is neither "grpc" nor "http/protobuf".
	ErrProtocol = errors.New("otlp: unknown protocol")
	// ErrEndpoint: the endpoint is neither host:port nor an http(s) URL.
	ErrEndpoint = errors.New("otlp: bad endpoint")
	// ErrDropped wraps what OnError gets for a batch that could not be
	// exported, and what Close returns when any record was dropped.
	ErrDropped = errors.New("otlp: records dropped")
	// ErrMetrics wraps what OnError gets for the exporter's own metrics
	// when they could not be exported, and what Close returns when their
	// last export failed.
	ErrMetrics = errors.New("otlp: metrics not exported")
)

// Protocols New knows, as OTEL_EXPORTER_OTLP_PROTOCOL spells them.
const (
	GRPC = "grpc"
	HTTP = "http/protobuf"
)

// Defaults for the zero values of Config.
const (
	DefaultServiceName  = "nginx"
	DefaultQueueSize    = 4096
	DefaultBatchSize    = 512
	DefaultRetryTimeout = 30 * time.Second
	DefaultExitWait     = 5 * time.Second
)

// Scope is the instrumentation scope of every record.
const Scope = "github.com/ngxprobe/ngxprobe"

// Config says where records go and what their resource is. The zero
// value exports over OTLP/HTTP to what the OTEL_EXPORTER_OTLP_* variables
// say, or to localhost:4318.
//
// A field that is set wins over the environment; a field left zero
// leaves the choice to the environment, then to the default (see the
// package documentation for the variables read).
type Config struct {
	// Endpoint is host:port, or a URL http://host:port[/path] or
	// https://...; the scheme then says whether to use TLS. For HTTP, a
	// URL without a path gets /v1/logs.
	Endpoint string
	// Protocol is GRPC or HTTP; "" is OTEL_EXPORTER_OTLP_LOGS_PROTOCOL,
	// then OTEL_EXPORTER_OTLP_PROTOCOL, then HTTP (the OTLP default).
	Protocol string
	// Insecure turns TLS off. False leaves it to an endpoint URL's
	// scheme, then to OTEL_EXPORTER_OTLP_INSECURE; TLS otherwise.
	Insecure bool
	// Headers replace OTEL_EXPORTER_OTLP_HEADERS when not nil.
	Headers map[string]string
	// Timeout bounds one call of the SDK exporter, its own retries
	// included; 0 is OTEL_EXPORTER_OTLP_TIMEOUT, then 10 s. A call that
	// times out is retried (RetryTimeout).
	Timeout time.Duration

	// ServiceName is service.name; "" is OTEL_SERVICE_NAME, then a
	// service.name in OTEL_RESOURCE_ATTRIBUTES, then "nginx".
	ServiceName string
	// HostName is host.name; "" is the one in OTEL_RESOURCE_ATTRIBUTES,
	// then os.Hostname().
	HostName string
	// Resource is the traced master's part of the resource. An event or
	// flip with an Origin (--all-nginx) has the Origin's over it.
	Resource Resource
	// Version is the instrumentation scope's version (ngxprobe's).
	Version string

	// QueueSize bounds the records waiting for export (DefaultQueueSize
	// when 0). Past it, Event and Flip drop and count.
	QueueSize int
	// BatchSize bounds the records of one export request
	// (DefaultBatchSize when 0).
	BatchSize int
	// RetryTimeout is how long one batch is retried while the Collector
	// is unreachable or asks to back off, before it is dropped
	// (DefaultRetryTimeout when 0).
	RetryTimeout time.Duration
	// ExitWait is how long Aggregates and Summary wait for room in a
	// full queue before they drop (DefaultExitWait when 0).
	ExitWait time.Duration
	// MetricInterval is how often the exporter's own counts (the
	// ngxprobe.otlp.records counter) are exported as OTLP metrics; 0 is
	// OTEL_METRIC_EXPORT_INTERVAL, then DefaultMetricInterval (10 s).
	// They are exported once more by Close. A negative interval, or
	// OTEL_METRICS_EXPORTER=none, turns them off.
	MetricInterval time.Duration

	// OnError, when set, is called for each batch dropped, with an error
	// wrapping ErrDropped and the cause, and for the first of a run of
	// failed metric exports, with an error wrapping ErrMetrics. The calls
	// come from the export goroutine and the metrics' one, one at a time.
	// It must not block for long: the queue fills meanwhile.
	OnError func(error)
}

// Resource is the traced master's part of a record's resource: its
// process.pid, and its container and Kubernetes labels.
type Resource struct {
	// PID is the master's process.pid; 0 leaves it out.
	PID int
	// Attributes are more resource attributes, such as container.id,
	// k8s.pod.name, k8s.namespace.name, k8s.container.name, or the
	// host's k8s.node.name. They win over the same keys in
	// OTEL_RESOURCE_ATTRIBUTES.
	Attributes map[string]string
}

// Stats are the exporter's counts. After Close, Records = Exported +
// Dropped. Exported and Dropped are exported as the metric
// ngxprobe.otlp.records too (see the package documentation).
type Stats struct {
	// Records is every record the Exporter was given: events, flips,
	// aggregation rows and summaries.
	Records uint64
	// Exported is the records the Collector acknowledged.
	Exported uint64
	// Dropped is the records that will never be exported: the queue was
	// full, their batch failed, or Close's deadline passed.
	Dropped uint64
	// Queued is the records waiting (an estimate while running).
	Queued int
}

// Exporter sends what it prints to an OpenTelemetry Collector as OTLP log
// records: it is an output.Printer. Its methods may be called from
// several goroutines.
type Exporter struct {
	exp       sdklog.Exporter
	queue     chan item
	batchSize int
	retry     time.Duration
	exitWait  time.Duration
	onError   func(error)
	// errMu makes the calls of onError one at a time.
	errMu sync.Mutex

	// meters is the pipeline of the exporter's own metrics, metricExp
	// its exporter; nil when they are off.
	meters    *sdkmetric.MeterProvider
	metricExp *metricExporter

	// base is the resource from the environment, service.name and
	// host.name resolved, and Config.Resource; root is the logger of its
	// provider, for the records without an Origin.
	base    *resource.Resource
	root    log.Logger
	version string
	// origins are the loggers of the masters seen in events' Origins
	// (--all-nginx), each with its own resource; only run's goroutine
	// touches the map.
	origins map[output.Origin]log.Logger

	records, exported, dropped atomic.Uint64
	// senders counts the calls between their closed check and their
	// send, so that the drain at Close misses none.
	senders atomic.Int64
	closed  atomic.Bool
	closing chan struct{} // closed by Close
	done    chan struct{} // closed when run returns

	// abortCtx ends every export when Close's deadline passes.
	abortCtx context.Context
	abort    context.CancelFunc

	mu        sync.Mutex
	providers []*sdklog.LoggerProvider
	lastErr   error

	// batch is the records emitted and not yet exported; only run's
	// goroutine touches it.
	batch []sdklog.Record
}

// item is one entry of the queue: an event or a flip, mapped to a
// record by the export goroutine (a full queue costs Event no mapping),
// a record, a summary to be made when its turn comes, or a flush marker.
type item struct {
	observed time.Time
	ev       *output.Event
	flip     *output.Flip
	rec      *record
	summary  *output.Summary
	verdict  *output.Verdict
	flushed  chan struct{}
}

// New makes an Exporter and starts its export goroutine. It does no
// network I/O: a Collector that is down now is retried when records come.
// Close must be called.
func New(ctx context.Context, cfg Config) (*Exporter, error) {
	exp, err := newSDKExporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	envRes, err := envResource(ctx, cfg)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, err
	}
	base := withResource(envRes, cfg.Resource.Attributes, cfg.Resource.PID)
	e := &Exporter{
		exp:       exp,
		queue:     make(chan item, orDefault(cfg.QueueSize, DefaultQueueSize)),
		batchSize: orDefault(cfg.BatchSize, DefaultBatchSize),
		retry:     orDefault(cfg.RetryTimeout, DefaultRetryTimeout),
		exitWait:  orDefault(cfg.ExitWait, DefaultExitWait),
		onError:   cfg.OnError,
		base:      base,
		version:   cfg.Version,
		origins:   map[output.Origin]log.Logger{},
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	if !metricsOff(cfg) {
		if e.meters, err = e.newMeterProvider(ctx, cfg, base); err != nil {
			_ = exp.Shutdown(ctx)
			return nil, err
		}
	}
	e.abortCtx, e.abort = context.WithCancel(context.Background())
	e.root = e.logger(base)
	go e.run()
	return e, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// logger makes a LoggerProvider for res, whose processor passes records
// to e.batch, and returns its logger.
func (e *Exporter) logger(res *resource.Resource) log.Logger {
	lp := sdklog.NewLoggerProvider(
		sdklog.WithResource(res),
		sdklog.WithProcessor(keeper{&e.batch}),
		// The records' attributes are ngxprobe's own: a probe's values,
		// bounded by its script; none is to be cut.
		sdklog.WithAttributeCountLimit(-1),
		sdklog.WithAttributeValueLengthLimit(-1),
	)
	e.mu.Lock()
	e.providers = append(e.providers, lp)
	e.mu.Unlock()
	var opts []log.LoggerOption
	if e.version != "" {
		opts = append(opts, log.WithInstrumentationVersion(e.version))
	}
	return lp.Logger(Scope, opts...)
}

// loggerFor is the logger of an Origin's master, made the first time it
// is seen: the resource of Config.Resource with the master's process.pid,
// process.executable.path, container.id and k8s.* labels over it.
func (e *Exporter) loggerFor(origin *output.Origin) log.Logger {
	if origin == nil {
		return e.root
	}
	o := *origin
	if l, ok := e.origins[o]; ok {
		return l
	}
	attrs := map[string]string{}
	for k, v := range map[string]string{
		"process.executable.path": o.Binary,
		"container.id":            o.ContainerID,
		"k8s.pod.name":            o.PodName,
		"k8s.namespace.name":      o.PodNamespace,
		"k8s.container.name":      o.ContainerName,
	} {
		if v != "" {
			attrs[k] = v
		}
	}
	l := e.logger(withResource(e.base, attrs, o.MasterPID))
	e.origins[o] = l
	return l
}

// Stats returns the counts so far.
func (e *Exporter) Stats() Stats {
	return Stats{Records: e.records.Load(), Exported: e.exported.Load(), Dropped: e.dropped.Load(), Queued: len(e.queue)}
}

// Dropped is the number of records dropped so far; after Close it is
// final.
func (e *Exporter) Dropped() uint64 { return e.dropped.Load() }

// offer queues it without waiting: a full queue drops it, counted.
func (e *Exporter) offer(it item) error {
	e.senders.Add(1)
	defer e.senders.Add(-1)
	if e.closed.Load() {
		return ErrClosed
	}
	e.records.Add(1)
	select {
	case e.queue <- it:
	default:
		e.dropped.Add(1)
	}
	return nil
}

// put queues it, waiting for room until ctx is done; then it is dropped,
// counted when it is a record.
func (e *Exporter) put(ctx context.Context, it item) error {
	e.senders.Add(1)
	defer e.senders.Add(-1)
	if e.closed.Load() {
		return ErrClosed
	}
	if it.flushed == nil {
		e.records.Add(1)
	}
	select {
	case e.queue <- it:
		return nil
	default:
	}
	select {
	case e.queue <- it:
		return nil
	case <-ctx.Done():
		if it.flushed == nil {
			e.dropped.Add(1)
		}
		return ctx.Err()
	}
}

// Flush waits until every record queued before it is exported or
// dropped, or until ctx is done.
func (e *Exporter) Flush(ctx context.Context) error {
	done := make(chan struct{})
	if err := e.put(ctx, item{flushed: done}); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close exports what is queued until ctx is done, drops (and counts) what
// is left then, exports the final counts as metrics (within what is left
// of ctx), and shuts the SDK down. It returns an error wrapping
// ErrDropped when any record of the exporter's life was dropped, and one
// wrapping ErrMetrics when the final counts could not be exported.
func (e *Exporter) Close(ctx context.Context) error {
	if e.closed.Swap(true) {
		return ErrClosed
	}
	close(e.closing)
	stop := context.AfterFunc(ctx, e.abort)
	<-e.done
	stop()
	e.abort()

	var errs []error
	if e.meters != nil {
		// The counts are final now: Records = Exported + Dropped. The
		// reader's Shutdown collects and exports them once more.
		err := e.meters.Shutdown(context.WithValue(ctx, finalExport{}, true))
		switch {
		case err != nil && e.metricExp.finalDone.Load():
			errs = append(errs, fmt.Errorf("otlp: shut down the metrics: %w", err))
		case err != nil:
			errs = append(errs, fmt.Errorf("%w at Close: %w", ErrMetrics, err))
		}
	}
	sctx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(context.Background(), time.Second)
		defer cancel()
	}
	if err := e.exp.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("otlp: shut down the exporter: %w", err))
	}
	e.mu.Lock()
	providers := e.providers
	e.mu.Unlock()
	for _, lp := range providers {
		if err := lp.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("otlp: shut down: %w", err))
		}
	}
	if s := e.Stats(); s.Dropped > 0 {
		e.mu.Lock()
		last := e.lastErr
		e.mu.Unlock()
		err := fmt.Errorf("%w: %d of %d records", ErrDropped, s.Dropped, s.Records)
		if last != nil {
			err = fmt.Errorf("%w (last export error: %v)", err, last)
		}
		errs = append([]error{err}, errs...)
	}
	return errors.Join(errs...)
}

// keeper is the SDK processor of each LoggerProvider: it keeps the
// records the export goroutine emits, for that goroutine to export them
// itself. The SDK's BatchProcessor is not used: it drops without an
// exact count, and the queue is ours.
type keeper struct{ batch *[]sdklog.Record }

func (keeper) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }

// OnEmit is called only from Exporter.run's goroutine (by Emit).
func (k keeper) OnEmit(_ context.Context, r *sdklog.Record) error {
	*k.batch = append(*k.batch, r.Clone())
	return nil
}

func (keeper) Shutdown(context.Context) error   { return nil }
func (keeper) ForceFlush(context.Context) error { return nil }

var _ output.Printer = (*Exporter)(nil)

// Event queues the event, or drops it when the queue is full. It never
// waits. The event is mapped to its record later, by the export
// goroutine: the caller must not change what ev refers to (its values,
// stack, origin) once it is given, as cmd/ngxprobe, which makes them
// anew for each event, does not.
func (e *Exporter) Event(ev output.Event) error {
	return e.offer(item{observed: time.Now(), ev: &ev})
}

// Flip queues the flip, or drops it when the queue is full; as for
// Event, the caller must not change what it refers to.
func (e *Exporter) Flip(f output.Flip) error {
	return e.offer(item{observed: time.Now(), flip: &f})
}

// Aggregates queues one record per row. They come at the end of a trace,
// so each waits up to Config.ExitWait for room.
func (e *Exporter) Aggregates(aggs []output.Aggregate) error {
	ctx, cancel := context.WithTimeout(context.Background(), e.exitWait)
	defer cancel()
	now := time.Now()
	for _, a := range aggs {
		for _, r := range aggregateRecords(a, now) {
			if err := e.put(ctx, item{rec: &r}); errors.Is(err, ErrClosed) {
				return err
			}
		}
	}
	return nil
}

// Summary queues the summary record, waiting up to Config.ExitWait for
// room. The record is made when its turn to be exported comes, so that
// its drop count covers every record before it.
func (e *Exporter) Summary(s output.Summary) error {
	ctx, cancel := context.WithTimeout(context.Background(), e.exitWait)
	defer cancel()
	err := e.put(ctx, item{summary: &s})
	if errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// run is the export goroutine: it takes what is queued, up to a batch,
// emits it through the SDK into e.batch, and exports the batch, until
// Close; then it drains the queue.
func (e *Exporter) run() {
	defer close(e.done)
	for {
		select {
		case it := <-e.queue:
			e.handle(it)
		case <-e.closing:
			e.drain()
			return
		}
	fill:
		for len(e.batch) < e.batchSize {
			select {
			case it := <-e.queue:
				e.handle(it)
			default:
				break fill
			}
		}
		e.export()
	}
}

// drain exports what is left after Close, once no call can still queue.
func (e *Exporter) drain() {
	for {
		select {
		case it := <-e.queue:
			e.handle(it)
			continue
		default:
		}
		if e.senders.Load() == 0 && len(e.queue) == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	e.export()
}

func (e *Exporter) handle(it item) {
	switch {
	case it.flushed != nil:
		e.export()
		close(it.flushed)
	case it.summary != nil:
		// Everything before the summary is exported or dropped now.
		e.export()
		e.emit(e.root, summaryRecord(*it.summary, e.dropped.Load(), time.Now()))
	case it.ev != nil:
		r := eventRecord(*it.ev)
		r.Observed = it.observed
		e.emit(e.loggerFor(it.ev.Origin), r)
	case it.flip != nil:
		r := flipRecord(*it.flip)
		r.Observed = it.observed
		e.emit(e.loggerFor(it.flip.Origin), r)
	case it.verdict != nil:
		r := verdictRecord(*it.verdict)
		r.Observed = it.observed
		e.emit(e.loggerFor(it.verdict.Origin), r)
	case it.rec != nil:
		e.emit(e.root, *it.rec)
	}
	if len(e.batch) >= e.batchSize {
		e.export()
	}
}

// emit passes r through the SDK (which adds the resource and scope) into
// e.batch.
func (e *Exporter) emit(l log.Logger, r record) {
	n := len(e.batch)
	l.Emit(context.Background(), r.logRecord())
	if len(e.batch) == n {
		// The SDK did not pass it on (it never should).
		e.dropped.Add(1)
	}
}

// export sends e.batch and counts it exported or dropped.
func (e *Exporter) export() {
	n := len(e.batch)
	if n == 0 {
		return
	}
	err := e.send(e.batch)
	clear(e.batch)
	e.batch = e.batch[:0]
	if rejected, ok := partialSuccess(err); ok {
		// The Collector took the request and refused some records.
		rejected = min(rejected, uint64(n))
		e.exported.Add(uint64(n) - rejected)
		e.dropped.Add(rejected)
		if rejected > 0 {
			e.failed(fmt.Errorf("%w: %d records rejected by the Collector: %w", ErrDropped, rejected, err), err)
		}
		return
	}
	if err != nil {
		e.dropped.Add(uint64(n))
		e.failed(fmt.Errorf("%w: %d records: %w", ErrDropped, n, err), err)
		return
	}
	e.exported.Add(uint64(n))
}

// failed keeps cause for Close to report, and passes err to OnError.
func (e *Exporter) failed(err, cause error) {
	e.mu.Lock()
	e.lastErr = cause
	e.mu.Unlock()
	e.report(err)
}

// report passes err to OnError, one call at a time.
func (e *Exporter) report(err error) {
	if e.onError == nil {
		return
	}
	e.errMu.Lock()
	defer e.errMu.Unlock()
	e.onError(err)
}
