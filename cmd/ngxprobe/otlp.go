package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/internal/target"
	"github.com/ngxprobe/ngxprobe/otlp"
)

// formatOTLP is -o otlp: events go to an OpenTelemetry Collector (package
// otlp), not to stdout; the summary goes to stderr as text, and to the
// Collector as a record.
const formatOTLP = "otlp"

// otlpFlags configure -o otlp; the standard OTEL_EXPORTER_OTLP_*
// variables configure what they leave unset.
type otlpFlags struct {
	endpoint, protocol string
	insecure           bool
}

func (o *otlpFlags) register(fs interface {
	StringVar(*string, string, string, string)
	BoolVar(*bool, string, bool, string)
}) {
	fs.StringVar(&o.endpoint, "otlp-endpoint", "", "with -o otlp: the Collector, `HOST:PORT` or a URL (default: OTEL_EXPORTER_OTLP_ENDPOINT)")
	fs.StringVar(&o.protocol, "otlp-protocol", "", "with -o otlp: grpc or http/protobuf (default: OTEL_EXPORTER_OTLP_PROTOCOL, then http/protobuf)")
	fs.BoolVar(&o.insecure, "otlp-insecure", false, "with -o otlp: no TLS to the Collector")
}

// otlpCloseWait bounds how long the exporter flushes at exit.
const otlpCloseWait = 5 * time.Second

// exportPrinter is the printer of -o otlp and how to close it.
type exportPrinter struct {
	*otlp.Exporter
	stderr io.Writer
}

// newExporter makes the printer of -o otlp, for the master t when there
// is one (its pid and labels are the records' resource).
func newExporter(flags *traceFlags, t *target.Target, stderr io.Writer) (*exportPrinter, error) {
	cfg := otlp.Config{
		Endpoint: flags.otlp.endpoint, Protocol: flags.otlp.protocol, Insecure: flags.otlp.insecure,
		Version: version(),
		OnError: func(err error) { fmt.Fprintf(stderr, "ngxprobe: otlp: %s\n", output.Escape(err.Error())) },
	}
	if t != nil && t.PID != 0 {
		l := target.LabelsOf("/proc", t.PID)
		cfg.Resource = otlp.Resource{PID: t.PID, Attributes: labelAttributes(l)}
	}
	exp, err := otlp.New(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: -o otlp: %v", errUsage, err)
	}
	return &exportPrinter{Exporter: exp, stderr: stderr}, nil
}

// labelAttributes are a master's labels as OpenTelemetry resource
// attributes.
func labelAttributes(l target.Labels) map[string]string {
	m := map[string]string{}
	for k, v := range map[string]string{"container.id": l.ContainerID, "k8s.pod.name": l.PodName, "k8s.namespace.name": l.PodNamespace, "k8s.container.name": l.ContainerName} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// close flushes what is queued, within otlpCloseWait, and says what was
// dropped.
func (e *exportPrinter) close() {
	ctx, cancel := context.WithTimeout(context.Background(), otlpCloseWait)
	defer cancel()
	err := e.Close(ctx)
	st := e.Stats()
	fmt.Fprintf(e.stderr, "ngxprobe: otlp: %d records, %d exported, %d dropped\n", st.Records, st.Exported, st.Dropped)
	// Drops are counted above; anything else (a metric export that
	// failed at exit, say) is said.
	if err != nil && (!errors.Is(err, otlp.ErrDropped) || errors.Is(err, otlp.ErrMetrics)) {
		fmt.Fprintf(e.stderr, "ngxprobe: otlp: %s\n", output.Escape(err.Error()))
	}
}

// newPrinter is the printer of -o: text or json on w, or an exporter.
func newPrinter(flags *traceFlags, t *target.Target, w io.Writer, stderr io.Writer) (output.Printer, *bufio.Writer, *exportPrinter, error) {
	if flags.format == formatOTLP {
		exp, err := newExporter(flags, t, stderr)
		if err != nil {
			return nil, nil, nil, err
		}
		return exp, bufio.NewWriter(io.Discard), exp, nil
	}
	buffered := bufio.NewWriterSize(w, 64<<10)
	out, err := output.New(flags.format, buffered)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: -o: %v", errUsage, err)
	}
	return out, buffered, nil, nil
}
