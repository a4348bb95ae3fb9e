package debuginfod

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// A download gets progress lines once it is known to be larger than
// bigDownload or has taken slowDownload; then a line every
// progressInterval (every progressIntervalLate after lateAfter), and a
// final one.
const (
	bigDownload          = 1 << 20
	slowDownload         = time.Second
	progressTick         = 100 * time.Millisecond
	progressInterval     = time.Second
	progressIntervalLate = 5 * time.Second
	lateAfter            = 10 * time.Second
	stallShownAfter      = time.Second
)

// progress follows one download from one server. Its counters are updated
// by the download; a goroutine writes the lines while the download runs,
// finish the last one. With no writer it only counts.
type progress struct {
	w       io.Writer
	label   string
	url     string
	timeout time.Duration
	begin   time.Time
	n       atomic.Int64 // bytes received
	last    atomic.Int64 // UnixNano of the last byte, 0 before the first
	size    atomic.Int64 // announced size, -1 when unknown
	resp    atomic.Bool  // the response has come
	shown   bool         // a line was written
	stop    chan struct{}
	done    chan struct{}
}

func startProgress(w io.Writer, label, url string, timeout time.Duration) *progress {
	p := &progress{w: w, label: label, url: url, timeout: timeout, begin: time.Now()}
	p.size.Store(-1)
	if w != nil {
		p.stop = make(chan struct{})
		p.done = make(chan struct{})
		go p.run()
	}
	return p
}

// started says the response came, announcing size bytes (-1: unknown).
func (p *progress) started(size int64) {
	p.size.Store(size)
	p.resp.Store(true)
}

func (p *progress) run() {
	defer close(p.done)
	tick := time.NewTicker(progressTick)
	defer tick.Stop()
	var next time.Time
	for {
		select {
		case <-p.stop:
			return
		case now := <-tick.C:
			elapsed := now.Sub(p.begin)
			if !p.shown {
				if !p.big() && elapsed < slowDownload {
					continue
				}
				p.shown = true
				fmt.Fprintf(p.w, "debuginfod: fetching %s from %s\n", p.label, p.url)
			}
			if now.Before(next) {
				continue
			}
			fmt.Fprintf(p.w, "debuginfod: %s: %s\n", p.label, p.status(now))
			if elapsed < lateAfter {
				next = now.Add(progressInterval)
			} else {
				next = now.Add(progressIntervalLate)
			}
		}
	}
}

func (p *progress) big() bool {
	return p.size.Load() > bigDownload || p.n.Load() > bigDownload
}

// status is "1.5 MiB / 5.6 MiB (27%), 3.1 MiB/s", with ", no data for 5s
// (gives up at 90s)" when stalled, or "waiting for the server for 3s".
func (p *progress) status(now time.Time) string {
	elapsed := now.Sub(p.begin)
	idle := elapsed
	if last := p.last.Load(); last != 0 {
		idle = now.Sub(time.Unix(0, last))
	}
	stall := ""
	if idle >= stallShownAfter && p.timeout > 0 {
		stall = fmt.Sprintf(", no data for %s (gives up at %s)", seconds(idle), seconds(p.timeout))
	} else if idle >= stallShownAfter {
		stall = fmt.Sprintf(", no data for %s", seconds(idle))
	}
	if !p.resp.Load() {
		return "waiting for the server for " + seconds(elapsed) + stall
	}
	n, size := p.n.Load(), p.size.Load()
	s := bytesString(n)
	if size > 0 {
		s += fmt.Sprintf(" / %s (%d%%)", bytesString(size), n*100/size)
	}
	return s + ", " + rate(n, elapsed) + stall
}

// finish writes the final line, when the download was big or slow enough
// to show progress: its size and time, or why it failed.
func (p *progress) finish(err error) {
	if p.w == nil {
		return
	}
	close(p.stop)
	<-p.done
	elapsed := time.Since(p.begin)
	if !p.shown && !p.big() && elapsed < slowDownload {
		return
	}
	n := p.n.Load()
	if err != nil {
		fmt.Fprintf(p.w, "debuginfod: %s from %s failed after %s (%s received): %v\n", p.label, p.url, seconds(elapsed), bytesString(n), err)
		return
	}
	fmt.Fprintf(p.w, "debuginfod: fetched %s: %s in %s (%s)\n", p.label, bytesString(n), seconds(elapsed), rate(n, elapsed))
}

func bytesString(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "- B/s"
	}
	return bytesString(int64(float64(n)/d.Seconds())) + "/s"
}

func seconds(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}
