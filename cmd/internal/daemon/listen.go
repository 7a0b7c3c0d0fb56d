package daemon

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/roost-mail/roost/cmd/internal/config"
	"github.com/roost-mail/roost/netguard"
)

// SocketMode is the permission of unix sockets Listen creates: the owner
// and the group may connect. The group is the daemon's, or the directory's
// when it is setgid (the package's /var/spool/postfix/roost is vmail:postfix
// 2750, so Postfix may connect); as root, see Listen.
const SocketMode = 0o660

// refuseMessages are written to a client refused by a connection limit on
// a plaintext listener, in each protocol's words.
var refuseMessages = map[string]string{
	"imapd": "* BYE [UNAVAILABLE] Too many connections, try again later\r\n", // RFC 5530
	"pop3d": "-ERR [SYS/TEMP] Too many connections, try again later\r\n",     // RFC 3206
	"lmtpd": "421 4.3.2 Too many connections, try again later\r\n",           // RFC 3463
}

// Listen opens a guarded listener for each entry of addrs ("host:port" or
// "unix:/path"): security.max_connections and security.max_ip_connections
// (trusted networks exempt from the latter) are counted across all the
// listeners of the Env, and PROXY headers are required from
// security.proxy_protocol_from. With implicitTLS the listeners speak TLS
// from the first byte (tls.NewListener outside netguard, so servers see a
// *tls.Conn); a server that does the TLS handshake itself uses
// ListenTLSRaw instead.
//
// A unix socket left by a dead process is removed first; a live one is an
// error. The socket is made SocketMode, and when the daemon runs as root it
// is given to the owner and group of its directory (Postfix's private/
// directory belongs to postfix), as Dovecot's unix_listener user= does.
//
// Listen refuses to run as root unless mail.layout is "system" or
// security.allow_root is true. On error, nothing stays open.
func (e *Env) Listen(addrs []string, implicitTLS bool) ([]net.Listener, error) {
	var tlsConf *tls.Config
	if implicitTLS && len(addrs) > 0 {
		if tlsConf = e.TLS.Config(); tlsConf == nil {
			return nil, fmt.Errorf("%s: implicit-TLS listeners %v need tls.cert_file and tls.key_file", e.Name, addrs)
		}
	}
	return e.listen(addrs, implicitTLS, tlsConf)
}

// ListenTLSRaw is Listen for implicit-TLS addresses (993, 995) served by a
// server that does the TLS handshake itself, e.g. imapd.ServeTLS, which
// counts bytes below TLS: the listeners are guarded like Listen's, but the
// connections are returned before TLS, and clients refused by a limit get
// no plaintext message.
func (e *Env) ListenTLSRaw(addrs []string) ([]net.Listener, error) {
	if len(addrs) > 0 && e.TLS.Config() == nil {
		return nil, fmt.Errorf("%s: implicit-TLS listeners %v need tls.cert_file and tls.key_file", e.Name, addrs)
	}
	return e.listen(addrs, true, nil)
}

// listen opens guarded listeners; tlsPort says the clients expect TLS from
// the first byte, and a non-nil tlsConf adds the TLS layer.
func (e *Env) listen(addrs []string, tlsPort bool, tlsConf *tls.Config) ([]net.Listener, error) {
	if len(addrs) == 0 {
		return nil, nil
	}
	if err := e.checkRoot(); err != nil {
		return nil, err
	}
	opts := netguard.Options{
		Limits:    e.limits(),
		ProxyFrom: e.ProxyFrom,
		Logger:    e.Logger,
		OnRefuse:  func(reason string) { e.refused.WithLabelValues(reason).Inc() },
	}
	if !tlsPort {
		opts.RefuseMessage = refuseMessages[e.Name]
	}
	var lns []net.Listener
	for _, addr := range addrs {
		ln, err := listen(addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("%s: %w", e.Name, err)
		}
		var l net.Listener = netguard.Wrap(ln, opts)
		if tlsConf != nil {
			l = tls.NewListener(l, tlsConf)
		}
		e.Logger.Info("listening", "addr", l.Addr().String(), "tls", tlsPort)
		lns = append(lns, l)
	}
	return lns, nil
}

// limits returns the Env's one Limits, shared by all its listeners.
func (e *Env) limits() *netguard.Limits {
	e.limitsOnce.Do(func() {
		s := e.Config.Security
		e.connLimits = netguard.NewLimits(s.MaxConnections, s.MaxIPConnections, e.Trusted)
	})
	return e.connLimits
}

func (e *Env) checkRoot() error {
	if os.Geteuid() != 0 || e.Config.Mail.Layout == "system" || e.Config.Security.AllowRoot {
		return nil
	}
	return errors.New("refusing to serve as root with mail.layout virtual, because files created " +
		"in Maildirs would belong to root: run the daemon as the mail user (systemd User=vmail), " +
		"or set mail.layout: system for system users' ~/Maildir, " +
		"or set security.allow_root: true where root is intended (containers, tests)")
}

func listen(addr string) (net.Listener, error) {
	network, address, err := config.SplitListen(addr)
	if err != nil {
		return nil, err
	}
	if network == "tcp" {
		ln, err := net.Listen("tcp", address)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w (is another server using the port? binding ports below 1024 needs CAP_NET_BIND_SERVICE)", addr, err)
		}
		return ln, nil
	}
	return listenUnix(address)
}

func listenUnix(path string) (net.Listener, error) {
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on unix:%s: %w (the directory must exist and be writable by the daemon's user)", path, err)
	}
	if err := os.Chmod(path, SocketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod unix:%s: %w", path, err)
	}
	if os.Geteuid() == 0 {
		dir, err := os.Stat(filepath.Dir(path))
		if err == nil {
			st := dir.Sys().(*syscall.Stat_t)
			err = os.Lchown(path, int(st.Uid), int(st.Gid))
		}
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("give unix:%s to its directory's owner: %w", path, err)
		}
	}
	return ln, nil
}

// removeStaleSocket removes path if it is a socket nobody listens on. A
// live socket or a file that is not a socket is left alone and reported.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unix:%s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("unix:%s exists and is not a socket: remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("unix:%s is in use by another process (is the daemon already running?)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket unix:%s: %w", path, err)
	}
	return nil
}
