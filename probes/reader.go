package probes

import (
	"encoding/binary"
	"errors"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/ngxprobe/ngxprobe/lua"
	"github.com/ngxprobe/ngxprobe/stacks"
)

// Event is one probe hit.
type Event struct {
	Probe  *Probe
	PID    uint32
	TID    uint32
	TimeNS uint64 // CLOCK_MONOTONIC
	Values []Value
	// Stack is set for probes with Stack: registers and stack bytes to
	// unwind with package stacks.
	Stack *stacks.Capture
	// Lua is set for probes with Stack when Options.Lua is: the Lua
	// frames running at the hit.
	Lua *lua.Stack
}

// ErrClosed is returned by Read and ReadRecord after Close.
var ErrClosed = errors.New("session closed")

// ErrFlushed is returned by Read and ReadRecord after Flush, once every
// record written before Flush has been read; test for it with
// errors.Is(err, ErrFlushed). The next read after it waits for records
// again.
var ErrFlushed = errors.New("ring buffer flushed")

// Read blocks until the next event. It returns ErrClosed after Close,
// and ErrFlushed once the ring is drained after Flush. Programs wake the
// reader only once an eighth of the ring is pending, so callers should
// set a deadline (SetDeadline) to bound how long events wait.
func (s *Session) Read() (Event, error) {
	for {
		raw, err := s.readSample()
		if err != nil {
			return Event{}, err
		}
		if ev, ok, err := s.Decode(raw); ok || err != nil {
			return ev, err
		}
	}
}

// ReadRecord is Read without decoding: it returns a copy of the next raw
// event for Decode. A record is several times smaller than its decoded
// event, so a reader that must queue events before they are printed
// queues records.
func (s *Session) ReadRecord() ([]byte, error) {
	return s.ReadRecordInto(nil)
}

// ReadRecordInto is ReadRecord copying the record into buf's memory
// when it fits (the result is then buf[:len(record)]), so that a reader
// can recycle the records it has decoded: Decode keeps no reference to
// the record.
func (s *Session) ReadRecordInto(buf []byte) ([]byte, error) {
	if s.reader == nil {
		return nil, ErrClosed
	}
	// Into the session's record, with buf's memory for the time of the
	// read: a record of its own would escape to the heap.
	own := s.record.RawSample
	s.record.RawSample = buf[:0]
	err := readError(s.reader.ReadInto(&s.record))
	raw := s.record.RawSample
	s.record.RawSample = own
	if err != nil {
		return nil, err
	}
	return raw, nil
}

// Pending is, after a read of a record, how many bytes the ring held
// after it: while it is not 0, the next read returns without waiting for
// records (unless those bytes are of records programs discarded).
func (s *Session) Pending() int {
	return s.record.Remaining
}

// MaxRecordSize is the largest record a probe of the session emits.
func (s *Session) MaxRecordSize() int {
	n := headerSize
	for _, l := range s.layouts {
		n = max(n, l.size)
	}
	return n
}

// readSample returns the next sample, valid until the next call.
func (s *Session) readSample() ([]byte, error) {
	if s.reader == nil {
		return nil, ErrClosed
	}
	if err := readError(s.reader.ReadInto(&s.record)); err != nil {
		return nil, err
	}
	return s.record.RawSample, nil
}

// readError is the error of a read of the ring, as Read returns it.
func readError(err error) error {
	if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	if errors.Is(err, ringbuf.ErrFlushed) {
		return ErrFlushed
	}
	return err // nil, os.ErrDeadlineExceeded among others
}

// Decode turns a record into an Event; ok is false for a record that no
// probe of the session emitted. Decode only reads the session's probes,
// so it may run in another goroutine than Read.
func (s *Session) Decode(raw []byte) (ev Event, ok bool, err error) {
	return s.DecodeInto(raw, nil)
}

// DecodeBuffer is memory that DecodeInto reuses from one event to the
// next; the zero value is ready to use.
type DecodeBuffer struct {
	values []Value
	raw    []byte
}

// DecodeInto is Decode with the event's Values, and their Raw bytes, in
// buf's memory (a nil buf is Decode): they are valid until the next
// DecodeInto with buf, so a caller that is done with each event before
// it decodes the next one need not allocate them for every event. The
// strings and the JSON data of the values stay valid. A DecodeBuffer is
// for one goroutine at a time.
func (s *Session) DecodeInto(raw []byte, buf *DecodeBuffer) (ev Event, ok bool, err error) {
	if len(raw) < headerSize {
		return Event{}, false, nil
	}
	id := binary.LittleEndian.Uint32(raw[hdrProbeID:])
	if int(id) >= len(s.probes) {
		return Event{}, false, nil
	}
	pidTgid := binary.LittleEndian.Uint64(raw[hdrPidTgid:])
	ev = Event{
		Probe:  s.probes[id],
		PID:    uint32(pidTgid >> 32),
		TID:    uint32(pidTgid),
		TimeNS: binary.LittleEndian.Uint64(raw[hdrTime:]),
	}
	if ev.Values, err = s.layouts[id].decodeInto(raw, buf); err != nil {
		return Event{}, false, err
	}
	ev.Stack = s.layouts[id].decodeStack(raw, int(ev.PID))
	ev.Lua = s.layouts[id].decodeLua(raw)
	if len(ev.Probe.Lua) > 0 {
		ev.Values = s.withLuaValues(ev)
	}
	return ev, true, nil
}

// withLuaValues puts the probe's Lua values among its values.
func (s *Session) withLuaValues(ev Event) []Value {
	out := make([]Value, 0, len(ev.Values)+len(ev.Probe.Lua))
	rest := ev.Values
	for _, lv := range ev.Probe.Lua {
		for len(out) < lv.At && len(rest) > 0 {
			out, rest = append(out, rest[0]), rest[1:]
		}
		out = append(out, luaValue(lv, ev.Lua, noLuaWhy(s.lua)))
	}
	return append(out, rest...)
}

// SetDeadline makes Read and ReadRecord return os.ErrDeadlineExceeded
// after t, once the ring holds no record.
func (s *Session) SetDeadline(t time.Time) {
	if s.reader != nil {
		s.reader.SetDeadline(t)
	}
}

// Flush makes a waiting or later Read or ReadRecord return without
// waiting for the deadline: the reads that follow return the records
// already in the ring, then ErrFlushed. After Detach, it drains the
// ring: every hit is then either read or counted lost. It may be called
// from another goroutine than Read; after Close, it returns ErrClosed.
func (s *Session) Flush() error {
	if s.reader == nil {
		return ErrClosed
	}
	return s.reader.Flush()
}

// Counts is the per-probe hit and lost-event count.
type Counts struct {
	Probe *Probe
	Hits  uint64
	Lost  uint64
}

// Counts reads the kernel-side counters.
func (s *Session) Counts() []Counts {
	out := make([]Counts, len(s.probes))
	for i, p := range s.probes {
		out[i] = Counts{Probe: p, Hits: sumPerCPU(s.core.hits, uint32(i)), Lost: sumPerCPU(s.core.lost, uint32(i))}
	}
	return out
}

// sumPerCPU sums a per-CPU array's counter across CPUs; 0 when it cannot
// be read.
func sumPerCPU(m *ebpf.Map, key uint32) uint64 {
	var vals []uint64
	if err := m.Lookup(key, &vals); err != nil {
		return 0
	}
	var n uint64
	for _, v := range vals {
		n += v
	}
	return n
}
