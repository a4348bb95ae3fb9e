package symbols_test

import (
	"debug/dwarf"
	"encoding/json"
	"testing"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// TestPointerJSON: a pointer value is a symbols.Pointer that prints and
// marshals as the "0x..." string it was before it had a type.
func TestPointerJSON(t *testing.T) {
	ptr := &dwarf.PtrType{CommonType: dwarf.CommonType{ByteSize: 8}, Type: &dwarf.VoidType{}}
	plan := &symbols.Plan{Expr: "c->listening", Type: ptr, Read: symbols.Read{Kind: symbols.ReadValue, Size: 8}}
	for _, tc := range []struct {
		raw  []byte
		want string
	}{
		{[]byte{0x10, 0xe0, 0xc4, 0xa3, 0xd0, 0x55, 0, 0}, "0x55d0a3c4e010"},
		{make([]byte, 8), "0x0"},
	} {
		f := plan.Format(tc.raw)
		p, ok := f.JSON.(symbols.Pointer)
		if !ok {
			t.Fatalf("Format(%x).JSON is %T, want symbols.Pointer", tc.raw, f.JSON)
		}
		if f.Text != tc.want || p.String() != tc.want {
			t.Errorf("Format(%x): text %q, String %q, want %q", tc.raw, f.Text, p.String(), tc.want)
		}
		b, err := json.Marshal(map[string]any{"value": f.JSON})
		if want := `{"value":"` + tc.want + `"}`; err != nil || string(b) != want {
			t.Errorf("Format(%x) marshals to %s, %v; want %s", tc.raw, b, err, want)
		}
		if (p == 0) != (tc.want == "0x0") {
			t.Errorf("Format(%x): null is %v", tc.raw, p == 0)
		}
	}
}
