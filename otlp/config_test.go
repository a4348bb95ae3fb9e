package otlp

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"syscall"
	"testing"

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
