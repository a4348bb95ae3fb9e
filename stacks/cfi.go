package stacks

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/go-delve/delve/pkg/dwarf/frame"
)

// Call frame information comes from files that other people control, and
// delve's pkg/dwarf/frame trusts it: its parser slices past the end of an
// entry whose augmentation length is too large, and its interpreter
// panics on DW_CFA_restore_state without DW_CFA_remember_state, and
// copies every register rule at each DW_CFA_remember_state (a crafted
// program of a few kilobytes costs seconds). parseCFI and establishFrame
// check what they hand it, and turn a panic that gets through into an
// error.

// Bounds on one CFA program (a CIE's initial instructions followed by
// an FDE's): real ones are tiny (nginx's longest FDE program is 231
// bytes, libcrypto's 323; they remember a state a few times).
const (
	maxCFIProgram = 16 << 10 // bytes
	maxCFIRegs    = 256      // distinct register numbers (x86-64 DWARF uses < 130)
	maxCFICopies  = 1 << 14  // register rules copied by DW_CFA_remember_state, in all
	maxCFIDepth   = 64       // states remembered at once
)

// parseCFI parses .eh_frame (ehFrameAddr its address) or .debug_frame
// (ehFrameAddr 0).
func parseCFI(data []byte, ehFrameAddr uint64) (fdes frame.FrameDescriptionEntries, err error) {
	defer func() {
		if p := recover(); p != nil {
			fdes, err = nil, fmt.Errorf("corrupt call frame information: %v", p)
		}
	}()
	return frame.Parse(data, binary.LittleEndian, 0, 8, ehFrameAddr)
}

// establishFrame runs the CFA program of fde up to pc.
func establishFrame(fde *frame.FrameDescriptionEntry, pc uint64) (fc *frame.FrameContext, err error) {
	if fde.CIE == nil {
		return nil, errors.New("FDE without a CIE")
	}
	if err := checkCFAProgram(fde.CIE.InitialInstructions, fde.Instructions); err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			fc, err = nil, fmt.Errorf("corrupt CFA program: %v", p)
		}
	}()
	return fde.EstablishFrame(pc)
}

// checkCFAProgram decodes a CIE's initial instructions and an FDE's
// instructions (run one after the other, with one stack of remembered
// states) and refuses what delve's interpreter would choke on: an
// unknown opcode, an operand cut short, a state restored that was never
// remembered, and a program over the bounds above.
func checkCFAProgram(parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > maxCFIProgram {
		return fmt.Errorf("CFA program of %d bytes (at most %d are run)", n, maxCFIProgram)
	}
	regs := map[uint64]bool{}
	depth, copies := 0, 0
	for _, p := range parts {
		c := cfaCursor{b: p}
		for c.ok() && c.off < len(c.b) {
			at := c.off
			op := c.byte()
			var reg []uint64
			switch op & 0xc0 {
			case 0x40: // DW_CFA_advance_loc
				continue
			case 0x80: // DW_CFA_offset: register in the opcode, ULEB128 offset
				c.uleb()
				reg = append(reg, uint64(op&0x3f))
			case 0xc0: // DW_CFA_restore
				reg = append(reg, uint64(op&0x3f))
			default:
				switch op {
				case 0x00: // nop
				case 0x01: // set_loc
					c.skip(8)
				case 0x02:
					c.skip(1)
				case 0x03:
					c.skip(2)
				case 0x04:
					c.skip(4)
				case 0x05, 0x09, 0x0c, 0x14: // offset_extended, register, def_cfa, val_offset
					reg = append(reg, c.uleb())
					c.uleb()
				case 0x06, 0x07, 0x08, 0x0d: // restore_extended, undefined, same_value, def_cfa_register
					reg = append(reg, c.uleb())
				case 0x0a: // remember_state
					depth++
					copies += len(regs)
					if depth > maxCFIDepth || copies > maxCFICopies {
						return fmt.Errorf("CFA program at %#x: DW_CFA_remember_state too many times", at)
					}
				case 0x0b: // restore_state
					if depth == 0 {
						return fmt.Errorf("CFA program at %#x: DW_CFA_restore_state without a remembered state", at)
					}
					depth--
				case 0x0e, 0x2e: // def_cfa_offset, GNU_args_size
					c.uleb()
				case 0x13: // def_cfa_offset_sf
					c.sleb()
				case 0x0f: // def_cfa_expression
					c.skip(c.uleb())
				case 0x10, 0x16: // expression, val_expression
					reg = append(reg, c.uleb())
					c.skip(c.uleb())
				case 0x11, 0x12, 0x15: // offset_extended_sf, def_cfa_sf, val_offset_sf
					reg = append(reg, c.uleb())
					c.sleb()
				case 0x1c, 0x3f: // lo_user, hi_user: delve skips a byte
					c.skip(1)
				default:
					return fmt.Errorf("CFA program at %#x: unknown opcode %#x", at, op)
				}
			}
			for _, r := range reg {
				regs[r] = true
			}
			if len(regs) > maxCFIRegs {
				return fmt.Errorf("CFA program at %#x: more than %d registers", at, maxCFIRegs)
			}
		}
		if !c.ok() {
			return fmt.Errorf("CFA program cut short at %#x", c.off)
		}
	}
	return nil
}

// cfaCursor reads a CFA program; a read past its end makes ok false.
type cfaCursor struct {
	b   []byte
	off int
	bad bool
}

func (c *cfaCursor) ok() bool { return !c.bad }

func (c *cfaCursor) byte() byte {
	if c.off >= len(c.b) {
		c.bad = true
		return 0
	}
	c.off++
	return c.b[c.off-1]
}

func (c *cfaCursor) skip(n uint64) {
	if n > uint64(len(c.b)-c.off) {
		c.bad = true
		c.off = len(c.b)
		return
	}
	c.off += int(n)
}

// uleb reads an unsigned LEB128 number, sleb a signed one (its bits are
// not needed); both stop at 10 bytes.
func (c *cfaCursor) uleb() uint64 {
	var v uint64
	for i := 0; i < 10; i++ {
		b := c.byte()
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 || c.bad {
			return v
		}
	}
	c.bad = true
	return v
}

func (c *cfaCursor) sleb() { c.uleb() }
