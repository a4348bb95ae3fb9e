package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// jsonLinesConfig is the exporter's configuration: the file to append to.
type jsonLinesConfig struct {
	Path string `mapstructure:"path"`
}

// Validate is called by the Collector when it loads the configuration.
func (c *jsonLinesConfig) Validate() error {
	if c.Path == "" {
		return errors.New("jsonlines: path is required")
	}
	return nil
}

func newJSONLinesFactory() exporter.Factory {
	return exporter.NewFactory(
		component.MustNewType("jsonlines"),
		func() component.Config { return &jsonLinesConfig{} },
		exporter.WithLogs(createLogs, component.StabilityLevelDevelopment),
		exporter.WithMetrics(createMetrics, component.StabilityLevelDevelopment),
	)
}

func createLogs(_ context.Context, _ exporter.Settings, cfg component.Config) (exporter.Logs, error) {
	return &jsonLines{path: cfg.(*jsonLinesConfig).Path}, nil
}

// createMetrics makes the exporter of a metrics pipeline; give it a path
// of its own (another instance: jsonlines/metrics).
func createMetrics(_ context.Context, _ exporter.Settings, cfg component.Config) (exporter.Metrics, error) {
	return &jsonLines{path: cfg.(*jsonLinesConfig).Path}, nil
}

// jsonLines writes each log record as one JSON line: an OTLP/JSON
// ExportLogsServiceRequest (pdata's marshaler) holding the record alone,
// with its resource and scope; and each metrics request as one JSON line,
// an OTLP/JSON ExportMetricsServiceRequest as received. It is
// synchronous, with no queue: the receiver answers the client once the
// lines are written (in one write), so what was acknowledged is in the
// file even if the Collector is killed right after.
type jsonLines struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func (j *jsonLines) Start(context.Context, component.Host) error {
	f, err := os.OpenFile(j.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	j.f = f
	return nil
}

func (j *jsonLines) Shutdown(context.Context) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

func (j *jsonLines) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: false}
}

func (j *jsonLines) ConsumeLogs(_ context.Context, ld plog.Logs) error {
	var m plog.JSONMarshaler
	var buf bytes.Buffer
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		rl := rls.At(i)
		sls := rl.ScopeLogs()
		for k := 0; k < sls.Len(); k++ {
			sl := sls.At(k)
			recs := sl.LogRecords()
			for n := 0; n < recs.Len(); n++ {
				one := plog.NewLogs()
				orl := one.ResourceLogs().AppendEmpty()
				rl.Resource().CopyTo(orl.Resource())
				orl.SetSchemaUrl(rl.SchemaUrl())
				osl := orl.ScopeLogs().AppendEmpty()
				sl.Scope().CopyTo(osl.Scope())
				osl.SetSchemaUrl(sl.SchemaUrl())
				recs.At(n).CopyTo(osl.LogRecords().AppendEmpty())
				b, err := m.MarshalLogs(one)
				if err != nil {
					return err
				}
				buf.Write(b)
				buf.WriteByte('\n')
			}
		}
	}
	return j.write(buf.Bytes())
}

func (j *jsonLines) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	var m pmetric.JSONMarshaler
	b, err := m.MarshalMetrics(md)
	if err != nil {
		return err
	}
	return j.write(append(b, '\n'))
}

func (j *jsonLines) write(b []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return errors.New("jsonlines: not started")
	}
	_, err := j.f.Write(b)
	return err
}
