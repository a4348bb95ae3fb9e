package stacks

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// TestCheckCFAProgram: what delve's interpreter would panic or spend
// seconds on is refused; real programs pass.
func TestCheckCFAProgram(t *testing.T) {
	// Remember the state after every register rule: copies grow with the
	// square of the program's length.
	var storm []byte
	for r := range 200 {
		storm = append(storm, 0x05, byte(r&0x7f), byte(r>>7)|0x80, 0x01, 0x0a) // offset_extended r; remember_state
	}
	for _, c := range []struct {
		name    string
		program []byte
		err     string
	}{
		{"gcc's usual", []byte{0x0c, 0x07, 0x08, 0x90, 0x01, 0x0e, 0x10, 0x86, 0x02, 0x44, 0x0a, 0x0e, 0x08, 0x0b}, ""},
		{"restore without remember", []byte{0x0b}, "without a remembered state"},
		{"operand cut short", []byte{0x0c, 0x07}, "cut short"},
		{"unknown opcode", []byte{0x2f, 0x01, 0x01}, "unknown opcode"},
		{"remember storm", storm, "too many times"},
		{"too long", bytes.Repeat([]byte{0x00}, maxCFIProgram+1), "bytes"},
		{"endless LEB128", append([]byte{0x0e}, bytes.Repeat([]byte{0xff}, 20)...), "cut short"},
	} {
		err := checkCFAProgram(c.program)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.err)
		}
	}
}

// TestParseCFIPanics: an .eh_frame FDE whose augmentation length points
// past its end makes delve's parser slice out of range; parseCFI says so.
func TestParseCFIPanics(t *testing.T) {
	le := binary.LittleEndian
	cie := []byte{1, 'z', 'R', 0, 1, 0x78, 0x10, 1, 0x1b, 0x0c, 0x07, 0x08, 0x90, 0x01, 0, 0}
	var b []byte
	b = le.AppendUint32(b, uint32(4+len(cie)))
	b = le.AppendUint32(b, 0) // CIE id
	b = append(b, cie...)
	fde := []byte{0, 0, 0, 0, 0x10, 0, 0, 0, 0xff, 0x7f} // pc begin, range, augmentation length 16383
	b = le.AppendUint32(b, uint32(4+len(fde)))
	b = le.AppendUint32(b, uint32(len(b))) // CIE pointer: back to offset 0
	b = append(b, fde...)
	start := time.Now()
	_, err := parseCFI(b, 0x1000)
	if err == nil || !strings.Contains(err.Error(), "corrupt call frame information") {
		t.Errorf("parseCFI: %v, want the panic turned into an error", err)
	}
	if time.Since(start) > time.Second {
		t.Error("slow")
	}
}
