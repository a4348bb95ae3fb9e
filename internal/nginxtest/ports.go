package nginxtest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

var (
	portsMu sync.Mutex
	ports   = map[int]bool{} // nginx ports handed out to tests still running
)

// FreePort returns a port for nginx to listen on at 127.0.0.1. It is not
// from the kernel's ephemeral range but from the 10000 ports below it: between this call and
// nginx's bind, neither an upstream's listen on port 0 nor any outgoing
// connection can be given it (which made several scenarios in one nginx
// flaky). It was free a moment ago and is not handed out again until the
// test's cleanup. Without a usable range it falls back to an ephemeral port.
func FreePort(t testing.TB) int {
	t.Helper()
	lo, hi := portRange()
	if hi-lo < 100 {
		return ephemeralPort(t)
	}
	for try := 0; try < 200; try++ {
		p := lo + rand.IntN(hi-lo)
		portsMu.Lock()
		taken := ports[p]
		if !taken {
			ports[p] = true
		}
		portsMu.Unlock()
		if taken {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			portsMu.Lock()
			delete(ports, p)
			portsMu.Unlock()
			continue
		}
		l.Close()
		t.Cleanup(func() {
			portsMu.Lock()
			delete(ports, p)
			portsMu.Unlock()
		})
		return p
	}
	t.Fatalf("nginxtest: no free port in [%d, %d)", lo, hi)
	return 0
}

// portRange is [lo, hi): the 10000 ports below the ephemeral range
// (net.ipv4.ip_local_port_range, usually 32768-60999), at least 1024.
func portRange() (lo, hi int) {
	hi = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var a, z int
		if n, _ := fmt.Sscan(string(b), &a, &z); n == 2 && a > 0 {
			hi = a
		}
	}
	return max(hi-10000, 1024), hi
}
