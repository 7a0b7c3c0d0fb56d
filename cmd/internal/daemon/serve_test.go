package daemon

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

func TestConfigFlag(t *testing.T) {
	var stderr bytes.Buffer
	if p, err := ConfigFlag("x", []string{"--config", "/tmp/r.yaml"}, &stderr); err != nil || p != "/tmp/r.yaml" {
		t.Errorf("got %q, %v", p, err)
	}
	if p, err := ConfigFlag("x", nil, &stderr); err != nil || p != "/etc/roost/roost.yaml" {
		t.Errorf("default: got %q, %v", p, err)
	}
	if _, err := ConfigFlag("x", []string{"extra"}, &stderr); err == nil || !strings.Contains(err.Error(), "only --config") {
		t.Errorf("extra argument: %v", err)
	}
}

func TestServeAll(t *testing.T) {
	closed := errors.New("closed")
	boom := errors.New("boom")
	var stops atomic.Int32
	release := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := []Serving{
		{ln, func(net.Listener) error { return boom }},
		{ln, func(net.Listener) error { <-release; return closed }},
	}
	err = ServeAll(s, closed, func() error { stops.Add(1); close(release); return nil })
	if !errors.Is(err, boom) || errors.Is(err, closed) {
		t.Errorf("ServeAll = %v, want only boom", err)
	}
	if stops.Load() != 1 {
		t.Errorf("stop called %d times, want 1", stops.Load())
	}
	if n := len(Servings([]net.Listener{ln, ln}, nil)); n != 2 {
		t.Errorf("Servings: %d", n)
	}
}
