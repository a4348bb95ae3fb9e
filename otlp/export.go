package otlp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Retry pacing, for the SDK's retries and ours alike: a Collector that
// comes back is used again within about retryMax.
const (
	retryMin = 250 * time.Millisecond
	retryMax = 2 * time.Second
)

// protocol is cfg.Protocol, or the environment's, or HTTP.
func protocol(cfg Config) (string, error) {
	p := cfg.Protocol
	for _, env := range []string{"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p != "" {
			break
		}
		p = strings.TrimSpace(os.Getenv(env))
	}
	switch p {
	case "", HTTP:
		return HTTP, nil
	case GRPC:
		return GRPC, nil
	}
	return "", fmt.Errorf("%w %q: want %q or %q", ErrProtocol, p, GRPC, HTTP)
}

// endpoint splits cfg.Endpoint: a URL or host:port. An empty one is left
// to the SDK (the environment, then localhost).
func endpoint(s string) (u *url.URL, hostPort string, err error) {
	if s == "" {
		return nil, "", nil
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return nil, "", fmt.Errorf("%w %q: %v", ErrEndpoint, s, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, "", fmt.Errorf("%w %q: want http://host:port or https://host:port", ErrEndpoint, s)
		}
		return u, "", nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return nil, "", fmt.Errorf("%w %q: want host:port or a URL: %v", ErrEndpoint, s, err)
	}
	return nil, s, nil
}

// newSDKExporter makes the SDK's OTLP log exporter for cfg. Its own
// retries are on (they know which answers are worth a retry, and honour
// throttling), bounded by the deadline Exporter.send gives each batch.
func newSDKExporter(ctx context.Context, cfg Config) (sdklog.Exporter, error) {
	proto, err := protocol(cfg)
	if err != nil {
		return nil, err
	}
	u, hostPort, err := endpoint(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	retryTimeout := orDefault(cfg.RetryTimeout, DefaultRetryTimeout)
	if proto == GRPC {
		opts := []otlploggrpc.Option{
			otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: true, InitialInterval: retryMin, MaxInterval: retryMax, MaxElapsedTime: retryTimeout}),
			// gRPC's reconnect backoff grows to 2 minutes: a Collector
			// back after a long outage would wait that long.
			otlploggrpc.WithDialOption(grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: retryMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: retryMax},
				MinConnectTimeout: 5 * time.Second,
			})),
		}
		switch {
		case u != nil:
			opts = append(opts, otlploggrpc.WithEndpointURL(u.String()))
		case hostPort != "":
			opts = append(opts, otlploggrpc.WithEndpoint(hostPort))
		}
		if cfg.Insecure {
			opts = append(opts, otlploggrpc.WithInsecure())
		}
		if cfg.Headers != nil {
			opts = append(opts, otlploggrpc.WithHeaders(cfg.Headers))
		}
		if cfg.Timeout > 0 {
			opts = append(opts, otlploggrpc.WithTimeout(cfg.Timeout))
		}
		return otlploggrpc.New(ctx, opts...)
	}
	opts := []otlploghttp.Option{
		otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: true, InitialInterval: retryMin, MaxInterval: retryMax, MaxElapsedTime: retryTimeout}),
	}
	switch {
	case u != nil:
		if u.Path == "" || u.Path == "/" {
			u = u.JoinPath("v1", "logs")
		}
		opts = append(opts, otlploghttp.WithEndpointURL(u.String()))
	case hostPort != "":
		opts = append(opts, otlploghttp.WithEndpoint(hostPort))
	}
	if cfg.Insecure {
		opts = append(opts, otlploghttp.WithInsecure())
	}
	if cfg.Headers != nil {
		opts = append(opts, otlploghttp.WithHeaders(cfg.Headers))
	}
	if cfg.Timeout > 0 {
		opts = append(opts, otlploghttp.WithTimeout(cfg.Timeout))
	}
	return otlploghttp.New(ctx, opts...)
}

// send exports one batch. The SDK retries what it knows to be transient,
// within one request Timeout; send goes on retrying a transient failure
// at the same pace (a Collector that refuses connections over HTTP, which
// the SDK does not retry, or one that did not answer in time) until the
// batch's RetryTimeout or Close's deadline.
func (e *Exporter) send(recs []sdklog.Record) error {
	if e.abortCtx.Err() != nil {
		return fmt.Errorf("not sent before Close's deadline: %w", e.abortCtx.Err())
	}
	ctx, cancel := context.WithTimeout(e.abortCtx, e.retry)
	defer cancel()
	wait := retryMin
	for {
		err := e.exp.Export(ctx, recs)
		if err == nil || ctx.Err() != nil || !transient(err) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, retryMax)
	}
}

// transient says whether err may go away: the Collector cannot be
// reached, did not answer in time, or asked to back off (gRPC's codes and
// HTTP's statuses the SDK retries), as opposed to refusing the request.
func transient(err error) bool {
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	// otlploghttp's answer for 429, 502, 503 and 504, unexported.
	return anyError(err, func(e error) bool { return reflect.TypeOf(e).Name() == "retryableError" })
}

// anyError says whether f holds for err or an error it wraps.
func anyError(err error, f func(error) bool) bool {
	if err == nil {
		return false
	}
	if f(err) {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return anyError(u.Unwrap(), f)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if anyError(e, f) {
				return true
			}
		}
	}
	return false
}

// partialSuccess reports whether err is only OTLP partial successes (the
// request was taken, some records rejected), and how many records were
// rejected. The SDK returns them as an unexported type,
// internal.PartialSuccess{RejectedItems int64}, matched here by shape.
func partialSuccess(err error) (rejected uint64, ok bool) {
	if err == nil {
		return 0, false
	}
	var walk func(error) bool
	walk = func(err error) bool {
		if j, isJoin := err.(interface{ Unwrap() []error }); isJoin {
			for _, e := range j.Unwrap() {
				if !walk(e) {
					return false
				}
			}
			return true
		}
		v := reflect.ValueOf(err)
		if v.Kind() != reflect.Struct || v.Type().Name() != "PartialSuccess" {
			return false
		}
		f := v.FieldByName("RejectedItems")
		if !f.IsValid() || f.Kind() != reflect.Int64 {
			return false
		}
		rejected += uint64(max(f.Int(), 0))
		return true
	}
	if !walk(err) {
		return 0, false
	}
	return rejected, true
}

// envResource is the resource of OTEL_RESOURCE_ATTRIBUTES and
// OTEL_SERVICE_NAME, with service.name and host.name resolved from cfg,
// the environment and the defaults.
func envResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	env, err := resource.New(ctx, resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("otlp: OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	var attrs []attribute.KeyValue
	_, hasService := env.Set().Value("service.name")
	switch {
	case cfg.ServiceName != "":
		attrs = append(attrs, attribute.String("service.name", cfg.ServiceName))
	case !hasService:
		attrs = append(attrs, attribute.String("service.name", DefaultServiceName))
	}
	host := cfg.HostName
	if _, ok := env.Set().Value("host.name"); !ok && host == "" {
		host, _ = os.Hostname()
	}
	if host != "" {
		attrs = append(attrs, attribute.String("host.name", host))
	}
	return resource.Merge(env, resource.NewSchemaless(attrs...))
}

// withResource is base with more attributes and process.pid (unless 0)
// over it.
func withResource(base *resource.Resource, more map[string]string, pid int) *resource.Resource {
	keys := make([]string, 0, len(more))
	for k := range more {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var attrs []attribute.KeyValue
	for _, k := range keys {
		attrs = append(attrs, attribute.String(k, validUTF8(more[k])))
	}
	if pid > 0 {
		attrs = append(attrs, attribute.Int("process.pid", pid))
	}
	res, err := resource.Merge(base, resource.NewSchemaless(attrs...))
	if err != nil {
		// Both are schemaless: Merge cannot fail.
		return base
	}
	return res
}
