package otlp

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"

	"github.com/ngxprobe/ngxprobe/internal/output"
)

// The records of ngxprobe closes.
const (
	VerdictName = "ngxprobe.verdict"
	ClosesName  = "ngxprobe.closes"
)

// The attributes of a verdict and of the closes counts; the request's
// use the HTTP semantic conventions.
const (
	KeyVerdictSide      = "ngxprobe.verdict.side"
	KeyVerdictInitiator = "ngxprobe.verdict.initiator"
	KeyVerdictCause     = "ngxprobe.verdict.cause"
	KeyVerdictPhase     = "ngxprobe.verdict.phase"
	KeyVerdictPeerConn  = "ngxprobe.verdict.peer_conn"
	KeyVerdictErrno     = "ngxprobe.verdict.errno"
	KeyVerdictErrorLog  = "ngxprobe.verdict.error_log"
	KeyVerdictVia       = "ngxprobe.verdict.via"
	KeyVerdictHealthy   = "ngxprobe.verdict.healthy"
	KeyHTTPMethod       = "http.request.method"
	KeyURLPath          = "url.path"
	KeyHTTPStatus       = "http.response.status_code"
	KeyClosesVerdicts   = "ngxprobe.closes.verdicts"
	KeyClosesLost       = "ngxprobe.closes.lost"
	KeyClosesFinal      = "ngxprobe.closes.final"
	KeyClosesHealthy    = "ngxprobe.closes.healthy." // + kind
)

var _ output.VerdictPrinter = (*Exporter)(nil)

// Verdict queues the verdict, or drops it when the queue is full, as
// Event does.
func (e *Exporter) Verdict(v output.Verdict) error {
	return e.offer(item{observed: time.Now(), verdict: &v})
}

// Closes queues the counts of healthy and abnormal closes. The final one
// waits up to Config.ExitWait for room, as the summary does; a periodic
// one is dropped when the queue is full.
func (e *Exporter) Closes(c output.Closes) error {
	r := closesRecord(c)
	if !c.Final {
		return e.offer(item{rec: &r})
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.exitWait)
	defer cancel()
	if err := e.put(ctx, item{rec: &r}); errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// verdictRecord maps a verdict: a WARN record (INFO for a healthy one)
// whose body is the text printer's line.
func verdictRecord(v output.Verdict) record {
	var a attrs
	a.int(KeyConnection, int64(v.Conn))
	if v.PeerConn != 0 {
		a.int(KeyVerdictPeerConn, int64(v.PeerConn))
	}
	a.str(KeyVerdictSide, v.Side)
	a.str(KeyVerdictInitiator, v.Initiator)
	a.str(KeyVerdictCause, v.Cause)
	if v.Phase != "" {
		a.str(KeyVerdictPhase, v.Phase)
	}
	if v.Peer != "" {
		if addr, port, ok := parsePeer(v.Peer); ok {
			a.str(KeyPeerAddress, addr)
			if port > 0 {
				a.int(KeyPeerPort, int64(port))
			}
		} else {
			a.str(KeyPeerAddress, v.Peer)
		}
	}
	if v.Method != "" {
		a.str(KeyHTTPMethod, v.Method)
		a.str(KeyURLPath, v.URI)
	}
	if v.Status != 0 {
		a.int(KeyHTTPStatus, int64(v.Status))
	}
	if v.Errno != 0 {
		a.int(KeyVerdictErrno, int64(v.Errno))
	}
	if v.ErrorLog != "" {
		a.str(KeyVerdictErrorLog, v.ErrorLog)
	}
	if f := v.DecidedAt; f != nil {
		a.str(KeyFunction, f.Symbol)
		if f.File != "" {
			a.str(KeyFilePath, f.File)
			a.int(KeyLineNo, int64(f.Line))
		}
	}
	if v.Via != "" {
		a.str(KeyVerdictVia, v.Via)
	}
	sev := log.SeverityWarn
	if v.Healthy {
		// closes --all: a healthy close is a record of its own kind,
		// not a warning.
		a = append(a, attribute.Bool(KeyVerdictHealthy, true))
		sev = log.SeverityInfo
	}
	a.int(KeyPID, int64(v.PID))
	if v.Stack != nil {
		a.str(KeyStacktrace, stackText(v.Stack))
	}
	return record{Time: v.Time, Name: VerdictName, Severity: sev, Body: output.VerdictLine(v), Attrs: a}
}

// closesRecord maps the counts of a closes trace.
func closesRecord(c output.Closes) record {
	var a attrs
	a.int(KeyClosesVerdicts, clampInt(c.Verdicts))
	a.int(KeyClosesLost, clampInt(c.Lost))
	a = append(a, attribute.Bool(KeyClosesFinal, c.Final))
	for _, h := range c.Healthy {
		a.int(KeyClosesHealthy+h.Kind, clampInt(h.Count))
	}
	var body bytes.Buffer
	_ = (&output.Text{W: &body}).Closes(c)
	sev := log.SeverityInfo
	if c.Lost > 0 {
		sev = log.SeverityWarn
	}
	return record{Time: c.Time, Observed: c.Time, Name: ClosesName, Severity: sev, Body: strings.TrimSuffix(body.String(), "\n"), Attrs: a}
}
