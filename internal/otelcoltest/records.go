package otelcoltest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// Record is one log record the Collector received, with its resource and
// scope. Attribute and resource values are typed as OTLP has them:
// string, int64, bool, float64, []byte, []any or map[string]any.
type Record struct {
	Resource     map[string]any
	Scope        string
	ScopeVersion string
	Time         time.Time
	Observed     time.Time
	Severity     int
	SeverityText string
	EventName    string
	Body         any
	Attributes   map[string]any
	// DroppedAttributes is the count the sender says it dropped.
	DroppedAttributes int
}

// Records reads what the Collector received so far. A last line without
// its newline (a write cut by a kill) is left out.
func (c *Collector) Records() ([]Record, error) {
	b, err := os.ReadFile(c.File())
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return ParseRecords(b)
}

// WaitRecords waits until the Collector has received at least n records
// and returns them all, or fails the test after timeout.
func (c *Collector) WaitRecords(t testing.TB, n int, timeout time.Duration) []Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		recs, err := c.Records()
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("otelcoltest: %d records after %v, want %d\n%s", len(recs), timeout, n, tail(c.Log(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ParseRecords parses the Collector's file: one OTLP/JSON
// ExportLogsServiceRequest per line.
func ParseRecords(b []byte) ([]Record, error) {
	var out []Record
	for n := 1; len(b) > 0; n++ {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break // cut short
		}
		line := b[:i]
		b = b[i+1:]
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		recs, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("otelcoltest: line %d: %w", n, err)
		}
		out = append(out, recs...)
	}
	return out, nil
}

type jsonKeyValue struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

type jsonLogs struct {
	ResourceLogs []struct {
		Resource struct {
			Attributes []jsonKeyValue `json:"attributes"`
		} `json:"resource"`
		ScopeLogs []struct {
			Scope struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			} `json:"scope"`
			LogRecords []struct {
				TimeUnixNano           json.Number     `json:"timeUnixNano"`
				ObservedTimeUnixNano   json.Number     `json:"observedTimeUnixNano"`
				SeverityNumber         json.Number     `json:"severityNumber"`
				SeverityText           string          `json:"severityText"`
				EventName              string          `json:"eventName"`
				Body                   json.RawMessage `json:"body"`
				Attributes             []jsonKeyValue  `json:"attributes"`
				DroppedAttributesCount int             `json:"droppedAttributesCount"`
			} `json:"logRecords"`
		} `json:"scopeLogs"`
	} `json:"resourceLogs"`
}

func parseLine(line []byte) ([]Record, error) {
	var l jsonLogs
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	if err := d.Decode(&l); err != nil {
		return nil, err
	}
	var out []Record
	for _, rl := range l.ResourceLogs {
		res, err := keyValues(rl.Resource.Attributes)
		if err != nil {
			return nil, fmt.Errorf("resource: %w", err)
		}
		for _, sl := range rl.ScopeLogs {
			for _, lr := range sl.LogRecords {
				r := Record{
					Resource:          res,
					Scope:             sl.Scope.Name,
					ScopeVersion:      sl.Scope.Version,
					SeverityText:      lr.SeverityText,
					EventName:         lr.EventName,
					DroppedAttributes: lr.DroppedAttributesCount,
				}
				if r.Time, err = unixNano(lr.TimeUnixNano); err != nil {
					return nil, err
				}
				if r.Observed, err = unixNano(lr.ObservedTimeUnixNano); err != nil {
					return nil, err
				}
				if lr.SeverityNumber != "" {
					n, err := strconv.Atoi(string(lr.SeverityNumber))
					if err != nil {
						return nil, fmt.Errorf("severityNumber %q: %w", lr.SeverityNumber, err)
					}
					r.Severity = n
				}
				if len(lr.Body) > 0 {
					if r.Body, err = anyValue(lr.Body); err != nil {
						return nil, fmt.Errorf("body: %w", err)
					}
				}
				if r.Attributes, err = keyValues(lr.Attributes); err != nil {
					return nil, err
				}
				out = append(out, r)
			}
		}
	}
	return out, nil
}

func unixNano(n json.Number) (time.Time, error) {
	if n == "" {
		return time.Time{}, nil
	}
	v, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: %w", n, err)
	}
	if v == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, v), nil
}

func keyValues(kvs []jsonKeyValue) (map[string]any, error) {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		v, err := anyValue(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", kv.Key, err)
		}
		m[kv.Key] = v
	}
	return m, nil
}

// anyValue decodes an OTLP/JSON AnyValue.
func anyValue(raw json.RawMessage) (any, error) {
	var v struct {
		StringValue *string                             `json:"stringValue"`
		BoolValue   *bool                               `json:"boolValue"`
		IntValue    *json.Number                        `json:"intValue"`
		DoubleValue *json.Number                        `json:"doubleValue"`
		BytesValue  *string                             `json:"bytesValue"`
		ArrayValue  *struct{ Values []json.RawMessage } `json:"arrayValue"`
		KvlistValue *struct{ Values []jsonKeyValue }    `json:"kvlistValue"`
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	switch {
	case v.StringValue != nil:
		return *v.StringValue, nil
	case v.BoolValue != nil:
		return *v.BoolValue, nil
	case v.IntValue != nil:
		return strconv.ParseInt(v.IntValue.String(), 10, 64)
	case v.DoubleValue != nil:
		return v.DoubleValue.Float64()
	case v.BytesValue != nil:
		return base64.StdEncoding.DecodeString(*v.BytesValue)
	case v.ArrayValue != nil:
		out := make([]any, len(v.ArrayValue.Values))
		for i, e := range v.ArrayValue.Values {
			x, err := anyValue(e)
			if err != nil {
				return nil, err
			}
			out[i] = x
		}
		return out, nil
	case v.KvlistValue != nil:
		return keyValues(v.KvlistValue.Values)
	}
	return nil, nil
}
