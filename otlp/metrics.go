package otlp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
)

// The exporter's own metric: one cumulative, monotonic counter of the
// records it was given, by outcome.
const (
	// MetricRecords is the name of the counter.
	MetricRecords = "ngxprobe.otlp.records"
	// MetricOutcome is its attribute: OutcomeExported or OutcomeDropped.
	MetricOutcome = "outcome"
	// OutcomeExported counts Stats.Exported: the records the Collector
	// acknowledged.
	OutcomeExported = "exported"
	// OutcomeDropped counts Stats.Dropped: the records that will never be
	// exported.
	OutcomeDropped = "dropped"
)

// DefaultMetricInterval is how often the counts are exported when neither
// Config.MetricInterval nor OTEL_METRIC_EXPORT_INTERVAL says.
const DefaultMetricInterval = 10 * time.Second

// metricsOff says whether the metrics are turned off: a negative
// Config.MetricInterval, or OTEL_METRICS_EXPORTER=none.
func metricsOff(cfg Config) bool {
	return cfg.MetricInterval < 0 || strings.TrimSpace(os.Getenv("OTEL_METRICS_EXPORTER")) == "none"
}

// metricInterval is Config.MetricInterval, else OTEL_METRIC_EXPORT_INTERVAL
// (milliseconds), else DefaultMetricInterval.
func metricInterval(cfg Config) time.Duration {
	if cfg.MetricInterval > 0 {
		return cfg.MetricInterval
	}
	if d, ok := envMillis("OTEL_METRIC_EXPORT_INTERVAL"); ok {
		return d
	}
	return DefaultMetricInterval
}

// envMillis reads a positive number of milliseconds from the environment.
func envMillis(name string) (time.Duration, bool) {
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return time.Duration(n) * time.Millisecond, true
}

// newMeterProvider makes the metric pipeline: the SDK's OTLP metric
// exporter for the protocol, endpoint, TLS and headers of the logs, behind
// a PeriodicReader, and the observable counter that reads e's counts.
// Nothing it does touches the log pipeline: the reader has its own
// goroutine and connection, and the callback only loads e's atomics.
func (e *Exporter) newMeterProvider(ctx context.Context, cfg Config, res *resource.Resource) (*sdkmetric.MeterProvider, error) {
	interval := metricInterval(cfg)
	// One collection and export, retries included, must not outlast the
	// next: the next carries the same counts, cumulative, and more.
	timeout := min(max(interval, time.Second), 30*time.Second)
	if d, ok := envMillis("OTEL_METRIC_EXPORT_TIMEOUT"); ok {
		timeout = d
	}
	exp, err := newMetricExporter(ctx, cfg, timeout)
	if err != nil {
		return nil, err
	}
	e.metricExp = &metricExporter{Exporter: exp, e: e}
	reader := sdkmetric.NewPeriodicReader(e.metricExp,
		sdkmetric.WithInterval(interval), sdkmetric.WithTimeout(timeout))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(reader))
	var opts []metric.MeterOption
	if e.version != "" {
		opts = append(opts, metric.WithInstrumentationVersion(e.version))
	}
	exported := metric.WithAttributeSet(attribute.NewSet(attribute.String(MetricOutcome, OutcomeExported)))
	dropped := metric.WithAttributeSet(attribute.NewSet(attribute.String(MetricOutcome, OutcomeDropped)))
	_, err = mp.Meter(Scope, opts...).Int64ObservableCounter(MetricRecords,
		metric.WithUnit("{record}"),
		metric.WithDescription("Log records given to ngxprobe's OTLP exporter, by outcome: exported (acknowledged by the Collector) or dropped (queue full, export failed, or left at Close)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(e.dropped.Load()), dropped)
			o.Observe(int64(e.exported.Load()), exported)
			return nil
		}))
	if err != nil {
		_ = mp.Shutdown(ctx)
		return nil, fmt.Errorf("otlp: metrics: %w", err)
	}
	return mp, nil
}

// finalExport marks the context of the export at Close: its error is
// Close's to return, not OnError's.
type finalExport struct{}

// metricExporter is the SDK's OTLP metric exporter, whose failures go to
// OnError rather than to the PeriodicReader, which would pass them to
// the process-wide otel error handler (the standard logger, on stderr).
type metricExporter struct {
	sdkmetric.Exporter
	e *Exporter
	// failing is set from the first failure to the next success: OnError
	// gets the first of a run of failures only, so a Collector without a
	// metrics pipeline, or one that is down for an hour, costs one call,
	// not one per interval.
	failing atomic.Bool
	// finalDone is set when the export at Close went through.
	finalDone atomic.Bool
}

func (m *metricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	err := m.Exporter.Export(ctx, rm)
	if ctx.Value(finalExport{}) != nil {
		m.finalDone.Store(err == nil)
		return err
	}
	switch {
	case err == nil:
		m.failing.Store(false)
	case errors.Is(ctx.Err(), context.Canceled):
		// A periodic export cut short by Close, which exports again.
	case !m.failing.Swap(true):
		m.e.report(fmt.Errorf("%w: %w", ErrMetrics, err))
	}
	return nil
}

// metricSettings are the metric exporter's endpoint, TLS and headers: the
// logs' ones.
type metricSettings struct {
	// url or hostPort is the endpoint; neither leaves it to the SDK
	// (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT,
	// localhost).
	url      *url.URL
	hostPort string
	insecure bool
	headers  map[string]string
	timeout  time.Duration
	gzip     bool
	tls      *tls.Config
}

// metricsConfig resolves the settings of the metric exporter so that it
// goes where the logs go, with the same TLS and headers. Config's fields
// come first, as for the logs. What the environment says for every
// signal (OTEL_EXPORTER_OTLP_*) or for the metrics
// (OTEL_EXPORTER_OTLP_METRICS_*) the SDK reads itself; what it says for
// the logs only (OTEL_EXPORTER_OTLP_LOGS_*, with neither of the other
// two set) is carried over here.
func metricsConfig(cfg Config, proto string) (metricSettings, error) {
	var s metricSettings
	u, hostPort, err := endpoint(cfg.Endpoint)
	if err != nil {
		return s, err
	}
	if v, ok := logsOnly("ENDPOINT"); ok && u == nil && hostPort == "" {
		// The logs' endpoint when only OTEL_EXPORTER_OTLP_LOGS_ENDPOINT
		// says: ignored, as the SDK ignores it, when it is not one.
		u, hostPort, _ = endpoint(v)
	}
	if u != nil {
		u = metricsURL(u, proto)
	}
	s.url, s.hostPort = u, hostPort
	s.insecure = cfg.Insecure
	if v, ok := logsOnly("INSECURE"); ok && strings.EqualFold(v, "true") {
		s.insecure = true
	}
	s.headers = cfg.Headers
	if v, ok := logsOnly("HEADERS"); ok && s.headers == nil {
		s.headers = parseHeaders(v)
	}
	s.timeout = cfg.Timeout
	if d, ok := logsOnlyMillis("TIMEOUT"); ok && s.timeout <= 0 {
		s.timeout = d
	}
	if v, ok := logsOnly("COMPRESSION"); ok && v == "gzip" {
		s.gzip = true
	}
	s.tls, err = logsTLS()
	return s, err
}

// metricsURL is the metrics' endpoint beside the logs' URL u. For HTTP,
// a path ending in /v1/logs becomes /v1/metrics, and any other path
// (none, or one of the logs' own) is /v1/metrics.
func metricsURL(u *url.URL, proto string) *url.URL {
	m := *u
	if proto == HTTP {
		p := strings.TrimSuffix(m.Path, "/")
		if strings.HasSuffix(p, "/v1/logs") {
			m.Path = strings.TrimSuffix(p, "/v1/logs") + "/v1/metrics"
		} else {
			m.Path = "/v1/metrics"
		}
		m.RawPath = ""
	}
	return &m
}

// logsOnly is OTEL_EXPORTER_OTLP_LOGS_<name> when neither
// OTEL_EXPORTER_OTLP_METRICS_<name> nor OTEL_EXPORTER_OTLP_<name> is set.
func logsOnly(name string) (string, bool) {
	if env("OTEL_EXPORTER_OTLP_METRICS_"+name) != "" || env("OTEL_EXPORTER_OTLP_"+name) != "" {
		return "", false
	}
	v := env("OTEL_EXPORTER_OTLP_LOGS_" + name)
	return v, v != ""
}

func logsOnlyMillis(name string) (time.Duration, bool) {
	v, ok := logsOnly(name)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return time.Duration(n) * time.Millisecond, true
}

func env(name string) string { return strings.TrimSpace(os.Getenv(name)) }

// parseHeaders reads OTEL_EXPORTER_OTLP_*_HEADERS as the SDK does:
// key=value pairs, comma-separated, the values URL-encoded.
func parseHeaders(s string) map[string]string {
	h := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		if dv, err := url.PathUnescape(v); err == nil {
			h[k] = strings.TrimSpace(dv)
		}
	}
	return h
}

// logsTLS is the TLS configuration of the metrics when the logs' own
// variables (OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE, _CLIENT_CERTIFICATE,
// _CLIENT_KEY) set some of it: each file is the metrics', else every
// signal's, else the logs' variable. It is nil when the SDK's reading
// of the environment is the same.
func logsTLS() (*tls.Config, error) {
	_, ca := logsOnly("CERTIFICATE")
	_, cert := logsOnly("CLIENT_CERTIFICATE")
	_, key := logsOnly("CLIENT_KEY")
	if !ca && !cert && !key {
		return nil, nil
	}
	resolve := func(name string) (string, string) {
		for _, prefix := range []string{"OTEL_EXPORTER_OTLP_METRICS_", "OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_LOGS_"} {
			if v := env(prefix + name); v != "" {
				return prefix + name, v
			}
		}
		return "", ""
	}
	c := &tls.Config{}
	if name, file := resolve("CERTIFICATE"); file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("otlp: %s: %w", name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("otlp: %s: no PEM certificate in %s", name, file)
		}
		c.RootCAs = pool
	}
	certName, certFile := resolve("CLIENT_CERTIFICATE")
	_, keyFile := resolve("CLIENT_KEY")
	if certFile != "" && keyFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("otlp: %s: %w", certName, err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// newMetricExporter makes the SDK's OTLP metric exporter for cfg's
// protocol, with the logs' endpoint, TLS and headers, cumulative whatever
// OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE says (a count lost
// with a failed export is in the next one), and its retries bounded by
// retry.
func newMetricExporter(ctx context.Context, cfg Config, retry time.Duration) (sdkmetric.Exporter, error) {
	proto, err := protocol(cfg)
	if err != nil {
		return nil, err
	}
	s, err := metricsConfig(cfg, proto)
	if err != nil {
		return nil, err
	}
	if proto == GRPC {
		opts := []otlpmetricgrpc.Option{
			otlpmetricgrpc.WithTemporalitySelector(sdkmetric.DefaultTemporalitySelector),
			otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: true, InitialInterval: retryMin, MaxInterval: retryMax, MaxElapsedTime: retry}),
			otlpmetricgrpc.WithDialOption(grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: retryMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: retryMax},
				MinConnectTimeout: 5 * time.Second,
			})),
		}
		switch {
		case s.url != nil:
			opts = append(opts, otlpmetricgrpc.WithEndpointURL(s.url.String()))
		case s.hostPort != "":
			opts = append(opts, otlpmetricgrpc.WithEndpoint(s.hostPort))
		}
		if s.insecure {
			opts = append(opts, otlpmetricgrpc.WithInsecure())
		} else if s.tls != nil {
			opts = append(opts, otlpmetricgrpc.WithTLSCredentials(credentials.NewTLS(s.tls)))
		}
		if s.headers != nil {
			opts = append(opts, otlpmetricgrpc.WithHeaders(s.headers))
		}
		if s.timeout > 0 {
			opts = append(opts, otlpmetricgrpc.WithTimeout(s.timeout))
		}
		if s.gzip {
			opts = append(opts, otlpmetricgrpc.WithCompressor("gzip"))
		}
		return otlpmetricgrpc.New(ctx, opts...)
	}
	opts := []otlpmetrichttp.Option{
		otlpmetrichttp.WithTemporalitySelector(sdkmetric.DefaultTemporalitySelector),
		otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: true, InitialInterval: retryMin, MaxInterval: retryMax, MaxElapsedTime: retry}),
	}
	switch {
	case s.url != nil:
		opts = append(opts, otlpmetrichttp.WithEndpointURL(s.url.String()))
	case s.hostPort != "":
		// The path too: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT's would stay.
		opts = append(opts, otlpmetrichttp.WithEndpoint(s.hostPort), otlpmetrichttp.WithURLPath("/v1/metrics"))
	}
	if s.insecure {
		opts = append(opts, otlpmetrichttp.WithInsecure())
	} else if s.tls != nil {
		opts = append(opts, otlpmetrichttp.WithTLSClientConfig(s.tls))
	}
	if s.headers != nil {
		opts = append(opts, otlpmetrichttp.WithHeaders(s.headers))
	}
	if s.timeout > 0 {
		opts = append(opts, otlpmetrichttp.WithTimeout(s.timeout))
	}
	if s.gzip {
		opts = append(opts, otlpmetrichttp.WithCompression(otlpmetrichttp.GzipCompression))
	}
	return otlpmetrichttp.New(ctx, opts...)
}
