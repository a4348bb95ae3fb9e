package otlp

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestProtocol(t *testing.T) {
	tests := []struct {
		cfg, logsEnv, env string
		want              string
		err               error
	}{
		{"", "", "", HTTP, nil},
		{"", "", "grpc", GRPC, nil},
		{"", "http/protobuf", "grpc", HTTP, nil},
		{GRPC, "http/protobuf", "http/protobuf", GRPC, nil},
		{"", "", "http/json", "", ErrProtocol},
		{"udp", "", "", "", ErrProtocol},
	}
	for _, tt := range tests {
		t.Setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", tt.logsEnv)
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tt.env)
		got, err := protocol(Config{Protocol: tt.cfg})
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("protocol(%q, env %q/%q) = %q, %v; want %q, %v", tt.cfg, tt.logsEnv, tt.env, got, err, tt.want, tt.err)
		}
	}
}

func TestEndpoint(t *testing.T) {
	tests := []struct {
		in, url, hostPort string
		err               error
	}{
		{"", "", "", nil},
		{"collector:4317", "", "collector:4317", nil},
		{"[::1]:4318", "", "[::1]:4318", nil},
		{"http://127.0.0.1:4318", "http://127.0.0.1:4318", "", nil},
		{"https://otel.example:443/custom/logs", "https://otel.example:443/custom/logs", "", nil},
		{"collector", "", "", ErrEndpoint},
		{"ftp://collector:21", "", "", ErrEndpoint},
		{"http://", "", "", ErrEndpoint},
	}
	for _, tt := range tests {
		u, hp, err := endpoint(tt.in)
		us := ""
		if u != nil {
			us = u.String()
		}
		if us != tt.url || hp != tt.hostPort || !errors.Is(err, tt.err) {
			t.Errorf("endpoint(%q) = %q, %q, %v; want %q, %q, %v", tt.in, us, hp, err, tt.url, tt.hostPort, tt.err)
		}
	}
}

// retryableError has the name of otlploghttp's unexported type.
type retryableError struct{ err error }

func (e retryableError) Error() string { return "retry-able request failure: " + e.err.Error() }
func (e retryableError) Unwrap() error { return e.err }

func TestTransient(t *testing.T) {
	refused := &url.Error{Op: "Post", URL: "http://127.0.0.1:1/v1/logs", Err: syscall.ECONNREFUSED}
	tests := []struct {
		err  error
		want bool
	}{
		{refused, true},
		{fmt.Errorf("export: %w", refused), true},
		{status.Error(codes.Unavailable, "connection refused"), true},
		{errors.Join(errors.New("exporter export timeout"), status.Error(codes.DeadlineExceeded, "deadline")), true},
		{fmt.Errorf("timeout: %w", context.DeadlineExceeded), true},
		{status.Error(codes.ResourceExhausted, "slow down"), true},
		{fmt.Errorf("failed: %w", retryableError{errors.New("503")}), true},
		{status.Error(codes.InvalidArgument, "bad request"), false},
		{errors.New("failed to send logs to http://x/v1/logs: 400 Bad Request"), false},
		{context.Canceled, false},
	}
	for _, tt := range tests {
		if got := transient(tt.err); got != tt.want {
			t.Errorf("transient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestMetricsURL(t *testing.T) {
	tests := []struct{ in, proto, want string }{
		{"http://127.0.0.1:4318", HTTP, "http://127.0.0.1:4318/v1/metrics"},
		{"http://127.0.0.1:4318/", HTTP, "http://127.0.0.1:4318/v1/metrics"},
		{"https://otel.example/v1/logs", HTTP, "https://otel.example/v1/metrics"},
		{"https://otel.example/tenant/v1/logs/", HTTP, "https://otel.example/tenant/v1/metrics"},
		{"https://otel.example:443/custom/logs", HTTP, "https://otel.example:443/v1/metrics"},
		{"http://collector:4317", GRPC, "http://collector:4317"},
	}
	for _, tt := range tests {
		u, _, err := endpoint(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := metricsURL(u, tt.proto).String(); got != tt.want {
			t.Errorf("metricsURL(%q, %s) = %q, want %q", tt.in, tt.proto, got, tt.want)
		}
	}
}

// The metrics follow the logs: Config first, then the LOGS_ variables
// that neither a METRICS_ nor a common one overrides (those the SDK
// reads itself).
func TestMetricsConfig(t *testing.T) {
	for _, v := range []string{"ENDPOINT", "INSECURE", "HEADERS", "TIMEOUT", "COMPRESSION", "CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"} {
		for _, prefix := range []string{"OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_LOGS_", "OTEL_EXPORTER_OTLP_METRICS_"} {
			t.Setenv(prefix+v, "")
		}
	}
	t.Setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "https://logs.example:4318/v1/logs")
	t.Setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-tenant=blue%20team, x-key = k1")
	t.Setenv("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "1500")
	t.Setenv("OTEL_EXPORTER_OTLP_LOGS_INSECURE", "true")
	t.Setenv("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "gzip")
	s, err := metricsConfig(Config{}, HTTP)
	if err != nil {
		t.Fatal(err)
	}
	if s.url == nil || s.url.String() != "https://logs.example:4318/v1/metrics" || !s.insecure || !s.gzip || s.timeout != 1500*time.Millisecond || s.tls != nil {
		t.Errorf("from the LOGS_ variables: %+v", s)
	}
	if want := map[string]string{"x-tenant": "blue team", "x-key": "k1"}; !reflect.DeepEqual(s.headers, want) {
		t.Errorf("headers %v, want %v", s.headers, want)
	}

	// Config wins; the common and METRICS_ variables are the SDK's.
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://metrics.example:4318/v1/metrics")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=red")
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2000")
	s, err = metricsConfig(Config{Endpoint: "collector:4317"}, GRPC)
	if err != nil {
		t.Fatal(err)
	}
	if s.url != nil || s.hostPort != "collector:4317" || s.headers != nil || s.timeout != 0 {
		t.Errorf("Config and the SDK's variables: %+v", s)
	}
	s, err = metricsConfig(Config{Headers: map[string]string{"a": "b"}, Timeout: time.Second}, GRPC)
	if err != nil {
		t.Fatal(err)
	}
	if s.url != nil || s.hostPort != "" || s.headers["a"] != "b" || s.timeout != time.Second {
		t.Errorf("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT left to the SDK, Config's headers: %+v", s)
	}

	// A LOGS_ certificate is the metrics' too.
	t.Setenv("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", filepath.Join(t.TempDir(), "missing.pem"))
	if _, err := metricsConfig(Config{}, HTTP); err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE") {
		t.Errorf("a missing LOGS_ certificate: %v", err)
	}
}

func TestMetricInterval(t *testing.T) {
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "")
	t.Setenv("OTEL_METRICS_EXPORTER", "")
	if got := metricInterval(Config{}); got != DefaultMetricInterval {
		t.Errorf("default %v", got)
	}
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "2500")
	if got := metricInterval(Config{}); got != 2500*time.Millisecond {
		t.Errorf("OTEL_METRIC_EXPORT_INTERVAL=2500: %v", got)
	}
	if got := metricInterval(Config{MetricInterval: time.Second}); got != time.Second {
		t.Errorf("Config: %v", got)
	}
	if metricsOff(Config{}) || !metricsOff(Config{MetricInterval: -1}) {
		t.Error("metricsOff with the interval")
	}
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	if !metricsOff(Config{}) {
		t.Error("OTEL_METRICS_EXPORTER=none: not off")
	}
}
