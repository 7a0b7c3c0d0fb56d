package netguard

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Refusal reasons, as logged and passed to Options.OnRefuse.
const (
	ReasonMaxConns        = "max_connections"    // Options.MaxConns reached
	ReasonMaxIPConns      = "max_ip_connections" // Options.MaxConnsPerIP reached
	ReasonBadHeader       = "proxy_header"       // trusted proxy sent no or a broken header
	ReasonUntrustedHeader = "proxy_untrusted"    // PROXY header from a peer not in ProxyFrom
)

// hints tell an admin what to check for the refusals that usually mean a
// configuration mistake.
var hints = map[string]string{
	ReasonBadHeader:       "peers in security.proxy_protocol_from must send a PROXY header (HAProxy: send-proxy or send-proxy-v2)",
	ReasonUntrustedHeader: "if this peer is your load balancer, add it to security.proxy_protocol_from",
}

// Defaults for the zero Options.
const (
	DefaultHeaderTimeout = 5 * time.Second
	DefaultLogInterval   = time.Minute
)

// ErrUntrustedHeader is returned by Read on a connection whose first bytes
// are a PROXY header that its peer was not trusted to send.
var ErrUntrustedHeader = errors.New("PROXY protocol header from a peer not in security.proxy_protocol_from")

// Options configure Wrap. The zero value limits nothing and trusts no proxy.
type Options struct {
	// Limits, if set, counts and limits connections; share one Limits
	// among all the listeners of a daemon.
	Limits *Limits
	// ProxyFrom lists the peers (load balancers) that must start each
	// connection with a PROXY header. Nobody else's header is believed.
	ProxyFrom []netip.Prefix
	// HeaderTimeout bounds reading a PROXY header. Default 5 s.
	HeaderTimeout time.Duration
	// RefuseMessage, if set, is written to a client refused for a
	// connection limit before the connection is closed, e.g.
	// "* BYE [UNAVAILABLE] Too many connections\r\n". Leave it empty for
	// implicit-TLS listeners, whose clients expect a TLS handshake.
	RefuseMessage string
	// Logger receives one line per refusal reason per LogInterval.
	// Default: no logging.
	Logger *slog.Logger
	// LogInterval is the least time between two log lines for the same
	// refusal reason; refusals in between are counted in the next line's
	// "suppressed" attribute. Default 1 min.
	LogInterval time.Duration
	// OnRefuse, if set, is called for every refused connection (metrics).
	OnRefuse func(reason string)
	// Now is the clock for log rate limiting (not for deadlines). Default
	// time.Now.
	Now func() time.Time
}

// Listener is a guarded net.Listener returned by Wrap.
type Listener struct {
	inner   net.Listener
	opts    Options // immutable
	ready   chan net.Conn
	closing chan struct{}
	stopped chan struct{} // closed when the accept loop has ended; err is set
	err     error
	close   sync.Once
	wg      sync.WaitGroup // accept loop and header readers

	mu      sync.Mutex
	pending map[net.Conn]struct{} // connections whose PROXY header is being read
	logs    map[string]*refusalLog
}

type refusalLog struct {
	last       time.Time
	suppressed int
}

// Wrap guards ln with o. The returned Listener owns ln: closing it closes ln.
func Wrap(ln net.Listener, o Options) *Listener {
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = DefaultHeaderTimeout
	}
	if o.LogInterval <= 0 {
		o.LogInterval = DefaultLogInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &Listener{
		inner:   ln,
		opts:    o,
		ready:   make(chan net.Conn),
		closing: make(chan struct{}),
		stopped: make(chan struct{}),
		pending: make(map[net.Conn]struct{}),
		logs:    make(map[string]*refusalLog),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next admitted connection. After Close it returns an
// error wrapping net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.stopped:
		return nil, l.err
	}
}

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Close stops accepting, drops connections still sending their PROXY
// header, and waits for the listener's goroutines. Admitted connections are
// the server's to close.
func (l *Listener) Close() error {
	var err error
	l.close.Do(func() {
		close(l.closing)
		err = l.inner.Close()
		l.mu.Lock()
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			select {
			case <-l.closing:
				l.stop(err)
				return
			default:
			}
			if !temporary(err) {
				l.stop(err)
				return
			}
			// Out of file descriptors and the like: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.opts.Logger.Warn("accept failed, retrying", "listener", l.Addr().String(), "retry_in", delay, "err", err)
			select {
			case <-time.After(delay):
			case <-l.closing:
			}
			continue
		}
		delay = 0
		peer := addrOf(c.RemoteAddr())
		if !l.opts.Limits.acquire() {
			l.refuse(c, ReasonMaxConns, peer, nil)
			continue
		}
		if peer.IsValid() && contains(l.opts.ProxyFrom, peer) {
			if !l.track(c) {
				l.opts.Limits.release()
				c.Close()
				continue
			}
			l.wg.Add(1)
			go l.readHeader(c, peer)
			continue
		}
		l.admit(c, peer, nil, nil)
	}
}

// track registers c as waiting for its PROXY header, unless Close has
// begun (Close drops the registered ones; one added later would be missed).
func (l *Listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.closing:
		return false
	default:
	}
	l.pending[c] = struct{}{}
	return true
}

func (l *Listener) stop(err error) {
	l.err = err
	close(l.stopped)
}

func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// readHeader reads the PROXY header of c from a trusted proxy, then admits
// c as the client the header names.
func (l *Listener) readHeader(c net.Conn, peer netip.Addr) {
	defer l.wg.Done()
	c.SetReadDeadline(time.Now().Add(l.opts.HeaderTimeout))
	h, err := ReadHeader(c)
	if err == nil {
		err = c.SetReadDeadline(time.Time{})
	}
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	if err != nil {
		l.opts.Limits.release()
		select {
		case <-l.closing: // Close cut it short: not the proxy's fault
			c.Close()
		default:
			l.refuse(c, ReasonBadHeader, peer, err)
		}
		return
	}
	if h.Local {
		l.admit(c, peer, nil, nil)
		return
	}
	l.admit(c, h.Source.Addr(), net.TCPAddrFromAddrPort(h.Source), net.TCPAddrFromAddrPort(h.Destination))
}

// admit applies the per-address limit to the client at remote and hands c
// to Accept. remoteAddr and localAddr, if not nil, replace c's own.
func (l *Listener) admit(c net.Conn, remote netip.Addr, remoteAddr, localAddr net.Addr) {
	release, ok := l.opts.Limits.acquireIP(remote)
	if !ok {
		l.opts.Limits.release()
		l.refuse(c, ReasonMaxIPConns, remote, nil)
		return
	}
	gc := &conn{Conn: c, remote: remoteAddr, local: localAddr, l: l, release: func() {
		release()
		l.opts.Limits.release()
	}}
	gc.inspect.Store(true)
	select {
	case l.ready <- gc:
	case <-l.closing:
		gc.Close()
	}
}

// refuse logs (rate-limited per reason), reports and closes c.
func (l *Listener) refuse(c net.Conn, reason string, remote netip.Addr, cause error) {
	now := l.opts.Now()
	l.mu.Lock()
	rl := l.logs[reason]
	if rl == nil {
		rl = &refusalLog{}
		l.logs[reason] = rl
	}
	logIt := rl.last.IsZero() || now.Sub(rl.last) >= l.opts.LogInterval
	suppressed := rl.suppressed
	if logIt {
		rl.last, rl.suppressed = now, 0
	} else {
		rl.suppressed++
	}
	l.mu.Unlock()
	if logIt {
		attrs := []any{"reason", reason, "listener", l.Addr().String(), "remote", remoteString(remote), "suppressed", suppressed}
		if cause != nil {
			attrs = append(attrs, "err", cause)
		}
		if h := hints[reason]; h != "" {
			attrs = append(attrs, "hint", h)
		}
		l.opts.Logger.Warn("connection refused", attrs...)
	}
	if l.opts.OnRefuse != nil {
		l.opts.OnRefuse(reason)
	}
	if l.opts.RefuseMessage != "" && (reason == ReasonMaxConns || reason == ReasonMaxIPConns) {
		// A new socket's send buffer is empty, so this does not block;
		// the deadline is there for the impossible case.
		c.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(c, l.opts.RefuseMessage)
	}
	c.Close()
}

func remoteString(a netip.Addr) string {
	if !a.IsValid() {
		return "local"
	}
	return a.String()
}

// conn is an admitted connection: its addresses may come from a PROXY
// header, and closing it frees its places in the limits.
type conn struct {
	net.Conn
	remote, local net.Addr // nil: the inner connection's
	release       func()
	l             *Listener
	inspect       atomic.Bool // the first Read is still to be inspected
	closed        sync.Once
}

func (c *conn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

func (c *conn) LocalAddr() net.Addr {
	if c.local != nil {
		return c.local
	}
	return c.Conn.LocalAddr()
}

// Read refuses the connection if its first bytes are a PROXY header: either
// a proxy that is missing from ProxyFrom (a configuration error worth a
// clear log line) or a client trying to spoof its address.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.inspect.CompareAndSwap(true, false) && looksLikeHeader(b[:n]) {
		c.l.refuse(c, ReasonUntrustedHeader, addrOf(c.RemoteAddr()), nil)
		return 0, ErrUntrustedHeader
	}
	return n, err
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(c.release)
	return err
}
