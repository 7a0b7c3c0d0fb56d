package netguard

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails with the given errors, then accepts one connection.
type flakyListener struct {
	net.Listener
	errs []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func TestAcceptRetriesPassingErrors(t *testing.T) {
	l := &flakyListener{errs: []error{
		&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)},
		&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)},
	}}
	var delay time.Duration
	c, err := Accept(l, &delay, nil)
	if err != nil || c == nil {
		t.Fatalf("Accept = %v, %v; want a connection after two retries", c, err)
	}
	c.Close()
	if delay != 0 {
		t.Errorf("delay after success = %v, want 0", delay)
	}
}

func TestAcceptReturnsOtherErrors(t *testing.T) {
	l := &flakyListener{errs: []error{net.ErrClosed}}
	var delay time.Duration
	if _, err := Accept(l, &delay, nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept = %v, want net.ErrClosed at once", err)
	}
}
