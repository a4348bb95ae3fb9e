package probes

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"
)

// writeRecords runs a program that writes n 8-byte records to the
// session's ring without waking the reader, as probes do below the
// wakeup threshold.
func writeRecords(t *testing.T, s *Session, n int) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SocketFilter,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, 0),
			asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
			asm.LoadMapPtr(asm.R1, s.core.events.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -8),
			asm.Mov.Imm(asm.R3, 8),
			asm.Mov.Imm(asm.R4, rbNoWakeup),
			asm.FnRingbufOutput.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
		License: "GPL",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	if _, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 15), Repeat: uint32(n)}); err != nil {
		t.Fatal(err)
	}
}

// After Flush, reads return the records already in the ring, then
// ErrFlushed; deadlines work as before.
func TestFlushDrainsRing(t *testing.T) {
	s := loadingSession(t, 1)
	var err error
	if s.reader, err = ringbuf.NewReader(s.core.events); err != nil {
		t.Fatal(err)
	}

	// Without a flush, an empty ring ends in the deadline.
	s.SetDeadline(time.Now())
	if _, err := s.ReadRecord(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadRecord on an empty ring = %v, want os.ErrDeadlineExceeded", err)
	}

	// A distant deadline: Flush, not the deadline, ends the drain.
	s.SetDeadline(time.Now().Add(10 * time.Second))
	writeRecords(t, s, 3)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, err := s.ReadRecord()
		if errors.Is(err, ErrFlushed) {
			break
		}
		if err != nil {
			t.Fatalf("ReadRecord after %d records: %v", n, err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("drained %d records, want 3", n)
	}

	// Read skips records no probe of the session wrote, then ends the
	// same way.
	writeRecords(t, s, 2)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(); !errors.Is(err, ErrFlushed) {
		t.Fatalf("Read after Flush = %v, want ErrFlushed", err)
	}

	// A flush is consumed: the next read waits for the deadline again.
	s.SetDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := s.ReadRecord(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadRecord after the drain = %v, want os.ErrDeadlineExceeded", err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Flush after Close = %v, want ErrClosed", err)
	}
}
