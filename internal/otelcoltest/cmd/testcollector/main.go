// Command testcollector is a real OpenTelemetry Collector for ngxprobe's
// tests: the Collector's own otelcol service and OTLP receiver (gRPC and
// HTTP), and one exporter of its own, "jsonlines", that appends each log
// record it is given to a file as one JSON line, and each metrics request
// as one JSON line (to another file, in another instance), before it
// answers.
// otelcoltest builds and runs it; it is not part of ngxprobe.
//
//	testcollector --config /path/to/config.yaml
package main

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry"
	"go.uber.org/zap"
)

func main() {
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "testcollector",
			Description: "OpenTelemetry Collector for ngxprobe's tests: OTLP logs and metrics in, JSON lines out",
			Version:     "test",
		},
		Factories: factories,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory()},
				DefaultScheme:     "file",
			},
		},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "testcollector:", err)
		os.Exit(1)
	}
}

func factories() (otelcol.Factories, error) {
	receivers, err := otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory())
	if err != nil {
		return otelcol.Factories{}, err
	}
	exporters, err := otelcol.MakeFactoryMap[exporter.Factory](newJSONLinesFactory())
	if err != nil {
		return otelcol.Factories{}, err
	}
	return otelcol.Factories{
		Receivers: receivers,
		Exporters: exporters,
		Telemetry: telemetry.NewFactory(func() component.Config { return &struct{}{} }, telemetry.WithCreateLogger(stderrLogger)),
	}, nil
}

// stderrLogger is the Collector's own log: warnings and errors, to
// stderr. Its own metrics and traces are the factory's no-ops (no :8888
// listener to collide between tests); the contrib otelconf telemetry
// would also pull every cloud's resource detector into the build.
func stderrLogger(_ context.Context, set telemetry.LoggerSettings, _ component.Config) (*zap.Logger, component.ShutdownFunc, error) {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
	cfg.Sampling = nil
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	build := cfg.Build
	if set.BuildZapLogger != nil {
		build = func(opts ...zap.Option) (*zap.Logger, error) { return set.BuildZapLogger(cfg, opts...) }
	}
	l, err := build()
	if err != nil {
		return nil, nil, err
	}
	return l, func(context.Context) error { _ = l.Sync(); return nil }, nil
}
