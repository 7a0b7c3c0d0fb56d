package netguard

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// Accept returns the next connection from ln. Errors that pass — a timeout,
// or the process out of file descriptors (EMFILE, ENFILE) — are logged and
// retried after a delay that doubles from 5 ms to 1 s, as net/http does, so
// that a burst of connections cannot stop a daemon from serving. *delay
// holds the current delay between calls (zero it is; a success resets it).
// Any other error, such as a closed listener, is returned.
func Accept(ln net.Listener, delay *time.Duration, log *slog.Logger) (net.Conn, error) {
	for {
		c, err := ln.Accept()
		if err == nil {
			*delay = 0
			return c, nil
		}
		var ne net.Error
		if !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
			return nil, err
		}
		*delay = min(max(2**delay, 5*time.Millisecond), time.Second)
		if log != nil {
			log.Warn("accept failed; retrying", "err", err, "delay", *delay)
		}
		time.Sleep(*delay)
	}
}
