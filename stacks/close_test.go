package stacks_test

import (
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/ngxprobe/ngxprobe/stacks"
)

// TestCloseWhilePreparing: Close waits for a Prepare under way, and
// Prepare and Unwind after Close do nothing.
func TestCloseWhilePreparing(t *testing.T) {
	u := stacks.NewUnwinder("")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := u.Prepare(os.Getpid()); err != nil && !errors.Is(err, stacks.ErrClosed) {
			t.Errorf("Prepare: %v", err)
		}
	}()
	if err := u.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
	if err := u.Prepare(os.Getpid()); !errors.Is(err, stacks.ErrClosed) {
		t.Errorf("Prepare after Close: %v, want ErrClosed", err)
	}
	if st := u.Unwind(stacks.Capture{PID: os.Getpid()}); !st.Truncated || len(st.Frames) != 0 {
		t.Errorf("Unwind after Close: %+v, want a truncated empty stack", st)
	}
	if err := u.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
}
