package otelcoltest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// Point is one data point of a sum or a gauge the Collector received,
// with its metric, resource and scope. Attribute and resource values are
// typed as in Record.
type Point struct {
	Resource     map[string]any
	Scope        string
	ScopeVersion string
	// Name, Unit and Description are the metric's.
	Name        string
	Unit        string
	Description string
	// Kind is "sum" or "gauge".
	Kind string
	// Monotonic and Temporality ("cumulative", "delta" or "") are a sum's.
	Monotonic   bool
	Temporality string
	Attributes  map[string]any
	Start, Time time.Time
	// IsInt says which of Int (asInt) and Double (asDouble) holds the
	// value.
	IsInt  bool
	Int    int64
	Double float64
}

// Value is the point's value as a float64.
func (p Point) Value() float64 {
	if p.IsInt {
		return float64(p.Int)
	}
	return p.Double
}

// Points reads every data point of a sum or a gauge the Collector
// received so far, in the order received. A last line without its
// newline (a write cut by a kill) is left out.
func (c *Collector) Points() ([]Point, error) {
	b, err := os.ReadFile(c.MetricsFile())
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return ParsePoints(b)
}

// Series is the points received of the metric name whose attributes
// include attrs (every key of attrs, with an equal value; nil matches
// all), in the order received.
func (c *Collector) Series(name string, attrs map[string]any) ([]Point, error) {
	pts, err := c.Points()
	if err != nil {
		return nil, err
	}
	var out []Point
	for _, p := range pts {
		if p.Name == name && hasAttributes(p.Attributes, attrs) {
			out = append(out, p)
		}
	}
	return out, nil
}

// Latest is the latest point received of the metric name whose attributes
// include attrs (as Series matches them): the one with the latest Time,
// the last received of those. It reports false when there is none.
func (c *Collector) Latest(name string, attrs map[string]any) (Point, bool, error) {
	pts, err := c.Series(name, attrs)
	if err != nil || len(pts) == 0 {
		return Point{}, false, err
	}
	latest := pts[0]
	for _, p := range pts[1:] {
		if !p.Time.Before(latest.Time) {
			latest = p
		}
	}
	return latest, true, nil
}

// WaitPoint waits until the latest point of name and attrs (as Latest
// finds it) satisfies ok, and returns it; it fails the test after
// timeout. A nil ok takes any point.
func (c *Collector) WaitPoint(t testing.TB, name string, attrs map[string]any, ok func(Point) bool, timeout time.Duration) Point {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, found, err := c.Latest(name, attrs)
		if err != nil {
			t.Fatal(err)
		}
		if found && (ok == nil || ok(p)) {
			return p
		}
		if time.Now().After(deadline) {
			if found {
				t.Fatalf("otelcoltest: %s %v: latest point after %v: %+v\n%s", name, attrs, timeout, p, tail(c.Log(), 20))
			}
			t.Fatalf("otelcoltest: %s %v: no point after %v\n%s", name, attrs, timeout, tail(c.Log(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasAttributes(got, want map[string]any) bool {
	for k, w := range want {
		g, ok := got[k]
		if !ok || !reflect.DeepEqual(g, w) {
			return false
		}
	}
	return true
}

// ParsePoints parses the Collector's metrics file: one OTLP/JSON
// ExportMetricsServiceRequest per line. Only sums and gauges have points
// here; histograms and summaries are skipped.
func ParsePoints(b []byte) ([]Point, error) {
	var out []Point
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
		pts, err := parseMetricsLine(line)
		if err != nil {
			return nil, fmt.Errorf("otelcoltest: metrics line %d: %w", n, err)
		}
		out = append(out, pts...)
	}
	return out, nil
}

type jsonNumberPoint struct {
	Attributes        []jsonKeyValue `json:"attributes"`
	StartTimeUnixNano json.Number    `json:"startTimeUnixNano"`
	TimeUnixNano      json.Number    `json:"timeUnixNano"`
	AsInt             *json.Number   `json:"asInt"`
	AsDouble          *json.Number   `json:"asDouble"`
}

type jsonMetrics struct {
	ResourceMetrics []struct {
		Resource struct {
			Attributes []jsonKeyValue `json:"attributes"`
		} `json:"resource"`
		ScopeMetrics []struct {
			Scope struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			} `json:"scope"`
			Metrics []struct {
				Name        string `json:"name"`
				Unit        string `json:"unit"`
				Description string `json:"description"`
				Sum         *struct {
					DataPoints             []jsonNumberPoint `json:"dataPoints"`
					AggregationTemporality json.RawMessage   `json:"aggregationTemporality"`
					IsMonotonic            bool              `json:"isMonotonic"`
				} `json:"sum"`
				Gauge *struct {
					DataPoints []jsonNumberPoint `json:"dataPoints"`
				} `json:"gauge"`
			} `json:"metrics"`
		} `json:"scopeMetrics"`
	} `json:"resourceMetrics"`
}

func parseMetricsLine(line []byte) ([]Point, error) {
	var m jsonMetrics
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	var out []Point
	for _, rm := range m.ResourceMetrics {
		res, err := keyValues(rm.Resource.Attributes)
		if err != nil {
			return nil, fmt.Errorf("resource: %w", err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, mt := range sm.Metrics {
				base := Point{
					Resource:     res,
					Scope:        sm.Scope.Name,
					ScopeVersion: sm.Scope.Version,
					Name:         mt.Name,
					Unit:         mt.Unit,
					Description:  mt.Description,
				}
				var dps []jsonNumberPoint
				switch {
				case mt.Sum != nil:
					base.Kind = "sum"
					base.Monotonic = mt.Sum.IsMonotonic
					if base.Temporality, err = temporality(mt.Sum.AggregationTemporality); err != nil {
						return nil, fmt.Errorf("%s: %w", mt.Name, err)
					}
					dps = mt.Sum.DataPoints
				case mt.Gauge != nil:
					base.Kind = "gauge"
					dps = mt.Gauge.DataPoints
				default:
					continue
				}
				for _, dp := range dps {
					p := base
					if p.Attributes, err = keyValues(dp.Attributes); err != nil {
						return nil, fmt.Errorf("%s: %w", mt.Name, err)
					}
					if p.Start, err = unixNano(dp.StartTimeUnixNano); err != nil {
						return nil, err
					}
					if p.Time, err = unixNano(dp.TimeUnixNano); err != nil {
						return nil, err
					}
					switch {
					case dp.AsInt != nil:
						p.IsInt = true
						if p.Int, err = strconv.ParseInt(dp.AsInt.String(), 10, 64); err != nil {
							return nil, fmt.Errorf("%s: asInt: %w", mt.Name, err)
						}
					case dp.AsDouble != nil:
						if p.Double, err = strconv.ParseFloat(dp.AsDouble.String(), 64); err != nil {
							return nil, fmt.Errorf("%s: asDouble: %w", mt.Name, err)
						}
					}
					out = append(out, p)
				}
			}
		}
	}
	return out, nil
}

// temporality reads an AggregationTemporality, a number (pdata's JSON)
// or its name.
func temporality(raw json.RawMessage) (string, error) {
	if len(raw) == 0 {
		return "", nil
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return "", err
	}
	switch fmt.Sprint(v) {
	case "0", "AGGREGATION_TEMPORALITY_UNSPECIFIED":
		return "", nil
	case "1", "AGGREGATION_TEMPORALITY_DELTA":
		return "delta", nil
	case "2", "AGGREGATION_TEMPORALITY_CUMULATIVE":
		return "cumulative", nil
	}
	return "", fmt.Errorf("aggregationTemporality %s", raw)
}
