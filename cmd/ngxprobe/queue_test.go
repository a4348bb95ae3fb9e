package main

import "testing"

// TestQueueLen: the queue is bounded by count for small records and by
// bytes for stack records, and never shrinks below a usable length.
func TestQueueLen(t *testing.T) {
	for _, c := range []struct{ record, want int }{
		{552, maxQueued}, // the default set
		{8520, 7876},     // one value plus an 8 KiB stack
		{1 << 30, 256},   // larger than the whole budget
		{0, maxQueued},   // no probe reported a size
	} {
		if got := queueLen(c.record); got != c.want {
			t.Errorf("queueLen(%d) = %d, want %d", c.record, got, c.want)
		}
		if got := queueLen(c.record); got > 256 && got*c.record > queueBytes {
			t.Errorf("queueLen(%d) = %d holds %d bytes, over the %d budget", c.record, got, got*c.record, queueBytes)
		}
	}
}
