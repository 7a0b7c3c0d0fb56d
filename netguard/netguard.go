// Package netguard guards Roost's listeners and tells front ends who is on
// the other end of a connection. It is protocol-agnostic and importable by
// every front end (imapd, pop3d, lmtp); cmd/internal/daemon wires it up.
//
// Wrap puts a net.Listener behind:
//   - a connection limit and a per-address limit (Limits, shared by a
//     daemon's listeners), refusing excess connections with an optional
//     one-line message and logging each refusal reason once per interval,
//     not once per connection of a storm;
//   - the HAProxy PROXY protocol, versions 1 and 2
//     (https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt), read
//     only from peers in Options.ProxyFrom and required from them, so
//     RemoteAddr is the real client behind a load balancer and the limits
//     and the auth penalty see it. A header from any other peer is never
//     believed; when it is seen the connection is refused and logged.
//
// Invariants:
//   - Accept never blocks on one client: PROXY headers are read in their
//     own goroutine under Options.HeaderTimeout (slowloris).
//   - A PROXY header is read byte-exactly, so no client byte after it is
//     buffered here (nothing can cross a later STARTTLS switch).
//   - Accepted connections are plain wrappers, never *tls.Conn; put
//     tls.NewListener outside Wrap, because go-imap recognises TLS by the
//     *tls.Conn type.
package netguard

import (
	"crypto/tls"
	"net"
	"net/netip"
)

// RemoteAddr returns the client's IP address of conn (the PROXY header's
// source when there was one), unmapped from IPv4-in-IPv6 and without an
// IPv6 zone (a zoned address matches no netip.Prefix), or the zero Addr for
// a unix socket.
func RemoteAddr(conn net.Conn) netip.Addr {
	return addrOf(conn.RemoteAddr())
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap().WithZone("")
	case nil, *net.UnixAddr:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}

// IsLocal reports whether the client of conn is on this host as Dovecot
// counts it: the client's and the server's IP addresses are equal (webmail
// on the mail host), or conn is a unix socket, whose file permissions
// decide who may connect.
func IsLocal(conn net.Conn) bool {
	if _, ok := conn.LocalAddr().(*net.UnixAddr); ok {
		return true
	}
	r, l := RemoteAddr(conn), addrOf(conn.LocalAddr())
	return r.IsValid() && r == l
}

// IsSecure reports whether plaintext passwords may be sent over conn
// without security.allow_plaintext_auth: it is TLS, or IsLocal.
func IsSecure(conn net.Conn) bool {
	if _, ok := conn.(*tls.Conn); ok {
		return true
	}
	return IsLocal(conn)
}
