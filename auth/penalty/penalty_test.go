package penalty

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// clock is a fake clock; sleeping advances it.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *clock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.mu.Unlock()
	c.Advance(d)
	return ctx.Err()
}

func newTest(o Options) (*Penalty, *clock) {
	c := newClock()
	o.Now, o.Sleep = c.Now, c.Sleep
	return New(o), c
}

var (
	ipA = netip.MustParseAddr("192.0.2.10")
	ipB = netip.MustParseAddr("198.51.100.7")
)

func TestDoublingUpToMax(t *testing.T) {
	p, _ := newTest(Options{})
	want := []time.Duration{2, 4, 8, 15, 15, 15}
	for i, w := range want {
		p.Fail(ipA, "")
		if got := p.Delay(ipA, ""); got != w*time.Second {
			t.Errorf("after %d failures: delay %v, want %v", i+1, got, w*time.Second)
		}
	}
	if got := p.Delay(ipB, ""); got != 0 {
		t.Errorf("other address delayed %v", got)
	}
}

func TestConfiguredMax(t *testing.T) {
	p, _ := newTest(Options{Initial: time.Second, Max: 5 * time.Second})
	for range 10 {
		p.Fail(ipA, "u")
	}
	if got := p.Delay(ipA, "u"); got != 5*time.Second {
		t.Errorf("delay %v, want the 5s maximum", got)
	}
}

// The delay is what remains since the last failure: a client that waited
// its penalty out is not delayed again.
func TestDelayFadesWithTime(t *testing.T) {
	p, c := newTest(Options{})
	p.Fail(ipA, "")
	p.Fail(ipA, "") // 4s
	c.Advance(3 * time.Second)
	if got := p.Delay(ipA, ""); got != time.Second {
		t.Errorf("after 3s of a 4s penalty: %v, want 1s", got)
	}
	c.Advance(time.Second)
	if got := p.Delay(ipA, ""); got != 0 {
		t.Errorf("penalty served: %v, want 0", got)
	}
	// The count is kept: the next failure doubles again.
	p.Fail(ipA, "")
	if got := p.Delay(ipA, ""); got != 8*time.Second {
		t.Errorf("third failure: %v, want 8s", got)
	}
}

func TestWaitSleepsThenCorrectPasswordWorks(t *testing.T) {
	p, c := newTest(Options{})
	ctx := context.Background()
	for range 3 {
		if err := p.Wait(ctx, ipA, "alice"); err != nil {
			t.Fatal(err)
		}
		p.Fail(ipA, "alice")
	}
	// The right password now: Wait delays it, then it is accepted.
	if err := p.Wait(ctx, ipA, "alice"); err != nil {
		t.Fatal(err)
	}
	p.Succeed(ipA, "alice")
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second}
	if fmt.Sprint(c.sleeps) != fmt.Sprint(want) {
		t.Errorf("slept %v, want %v", c.sleeps, want)
	}
}

func TestWaitCancelled(t *testing.T) {
	p := New(Options{Initial: time.Hour, Max: time.Hour})
	p.Fail(ipA, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Wait(ctx, ipA, "") }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, want context.Canceled", err)
	}
	// An already cancelled context returns at once even without delay.
	if err := p.Wait(ctx, ipB, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, want context.Canceled", err)
	}
}

func TestUserKeyAcrossAddresses(t *testing.T) {
	p, _ := newTest(Options{})
	// A botnet guesses Bob's password from many addresses.
	for i := range 4 {
		p.Fail(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), "Bob")
	}
	if got := p.Delay(ipB, " bob "); got != 15*time.Second {
		t.Errorf("bob from a new address: %v, want 15s", got)
	}
	if got := p.Delay(ipB, "carol"); got != 0 {
		t.Errorf("carol delayed %v", got)
	}
}

func TestSucceedForgetsUserNotAddress(t *testing.T) {
	p, _ := newTest(Options{})
	p.Fail(ipA, "alice")
	p.Fail(ipA, "alice")
	p.Succeed(ipA, "alice")
	if got := p.Delay(ipB, "alice"); got != 0 {
		t.Errorf("alice after success: %v, want 0", got)
	}
	if got := p.Delay(ipA, "mallory"); got != 4*time.Second {
		t.Errorf("address after a success: %v, want its 4s penalty", got)
	}
}

func TestTrustedNetworksExempt(t *testing.T) {
	p, _ := newTest(Options{Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	for range 5 {
		p.Fail(ipA, "alice")
	}
	if got := p.Delay(ipA, "alice"); got != 0 {
		t.Errorf("trusted address delayed %v", got)
	}
	if got := p.Delay(ipB, "alice"); got != 0 {
		t.Errorf("failures from a trusted network counted against the user: %v", got)
	}
	mapped := netip.AddrFrom16(ipA.As16())
	if got := p.Delay(mapped, ""); got != 0 {
		t.Errorf("IPv4-mapped trusted address delayed %v", got)
	}
	ll, _ := newTest(Options{Trusted: []netip.Prefix{netip.MustParsePrefix("fe80::/10")}})
	zoned := netip.MustParseAddr("fe80::1%eth0")
	ll.Fail(zoned, "")
	if got := ll.Delay(zoned, ""); got != 0 {
		t.Errorf("zoned link-local address in a trusted network delayed %v", got)
	}
}

func TestAddressKeys(t *testing.T) {
	p, _ := newTest(Options{})
	p.Fail(netip.MustParseAddr("2001:db8:1:2::1"), "")
	for _, tc := range []struct {
		addr    string
		delayed bool
	}{
		{"2001:db8:1:ffff::99", true}, // same /48
		{"2001:db8:2::1", false},
		{"192.0.2.10", false},
	} {
		if got := p.Delay(netip.MustParseAddr(tc.addr), "") > 0; got != tc.delayed {
			t.Errorf("%s delayed = %v, want %v", tc.addr, got, tc.delayed)
		}
	}
	p.Fail(netip.MustParseAddr("fe80::1%eth0"), "")
	if p.Delay(netip.MustParseAddr("fe80::1%eth1"), "") == 0 {
		t.Error("zone made a separate key")
	}
	p.Fail(netip.MustParseAddr("::ffff:198.51.100.7"), "")
	if p.Delay(ipB, "") == 0 {
		t.Error("IPv4-mapped failure not counted for the IPv4 address")
	}
	if p.Delay(netip.MustParseAddr("198.51.100.8"), "") != 0 {
		t.Error("IPv4 neighbour delayed: IPv4 keys are /32")
	}
	// No address (a unix socket) and no user: nothing to key on.
	p.Fail(netip.Addr{}, "")
	if a, u := p.Len(); a != 3 || u != 0 {
		t.Errorf("Len = %d, %d, want 3, 0", a, u)
	}
}

func TestExpiry(t *testing.T) {
	p, c := newTest(Options{Expire: time.Hour})
	p.Fail(ipA, "alice")
	c.Advance(time.Hour)
	p.Fail(ipB, "bob") // drops the expired entries
	if a, u := p.Len(); a != 1 || u != 1 {
		t.Errorf("Len = %d, %d, want 1, 1", a, u)
	}
	p.Fail(ipA, "")
	if got := p.Delay(ipA, ""); got != 2*time.Second {
		t.Errorf("after expiry the count restarts: %v, want 2s", got)
	}
}

func TestBoundedMemory(t *testing.T) {
	p, _ := newTest(Options{MaxEntries: 100})
	for i := range 10000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		p.Fail(a, fmt.Sprintf("user%d", i))
	}
	if a, u := p.Len(); a != 100 || u != 100 {
		t.Errorf("Len = %d, %d, want 100, 100", a, u)
	}
	last := netip.AddrFrom4([4]byte{10, 0, 39, 15}) // i = 9999
	if p.Delay(last, "") == 0 {
		t.Error("most recent failure evicted")
	}
	if p.Delay(netip.AddrFrom4([4]byte{10, 0, 0, 0}), "user0") != 0 {
		t.Error("oldest failure not evicted")
	}
}

func TestNil(t *testing.T) {
	var p *Penalty
	p.Fail(ipA, "u")
	p.Succeed(ipA, "u")
	if err := p.Wait(context.Background(), ipA, "u"); err != nil {
		t.Error(err)
	}
	if a, u := p.Len(); a+u != 0 {
		t.Error("nil Penalty has entries")
	}
}

func TestConcurrent(t *testing.T) {
	p, _ := newTest(Options{MaxEntries: 50})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				a := netip.AddrFrom4([4]byte{10, 1, byte(g), byte(i)})
				p.Wait(context.Background(), a, "u")
				p.Fail(a, fmt.Sprint("u", i%70))
				p.Succeed(a, fmt.Sprint("u", i%13))
			}
		})
	}
	wg.Wait()
	if a, u := p.Len(); a > 50 || u > 50 {
		t.Errorf("Len = %d, %d, over the bound of 50", a, u)
	}
}

// BenchmarkFailBotnet measures recording failures from ever new addresses
// with a full table (every call evicts).
func BenchmarkFailBotnet(b *testing.B) {
	p := New(Options{MaxEntries: 10000})
	var i uint32
	for b.Loop() {
		i++
		p.Fail(netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}), "")
	}
}
