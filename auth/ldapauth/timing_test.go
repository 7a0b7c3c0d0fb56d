package ldapauth

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// bindCounter forwards LDAP between clients and a server and records the DN
// of every bind request that crosses it, as the server receives it.
type bindCounter struct {
	l     net.Listener
	mu    sync.Mutex
	binds []string
}

func newBindCounter(t *testing.T, target string) *bindCounter {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &bindCounter{l: l}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, s)
			mu.Unlock()
			wg.Go(func() { p.forward(s, c) })
			wg.Go(func() { copyQuiet(c, s) })
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

// forward copies client requests to the server one LDAP message at a
// time, byte for byte, noting bind requests.
func (p *bindCounter) forward(server, client net.Conn) {
	defer server.Close()
	for {
		var raw bytes.Buffer
		msg, err := ber.ReadPacket(io.TeeReader(client, &raw))
		if err != nil {
			return
		}
		if len(msg.Children) > 1 && msg.Children[1].ClassType == ber.ClassApplication &&
			msg.Children[1].Tag == ldap.ApplicationBindRequest && len(msg.Children[1].Children) > 1 {
			dn, _ := msg.Children[1].Children[1].Value.(string)
			p.mu.Lock()
			p.binds = append(p.binds, dn)
			p.mu.Unlock()
		}
		if _, err := server.Write(raw.Bytes()); err != nil {
			return
		}
	}
}

// userBinds returns the bind DNs seen since the last call, without the
// service account's.
func (p *bindCounter) userBinds() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, dn := range p.binds {
		if dn != serviceDN {
			out = append(out, dn)
		}
	}
	p.binds = nil
	return out
}

// TestUnknownUserBinds: a login for a name the directory does not have
// sends one user bind, as a wrong password for a real user does, in both
// modes, and gets the same answer. Counted on the wire; no timing is
// asserted (BenchmarkUnknownUserTiming measures it).
func TestUnknownUserBinds(t *testing.T) {
	s := startSlapd(t)
	p := newBindCounter(t, s.Addr)
	for name, o := range map[string]Options{"search": searchModeOpts(s), "bind": bindModeOpts(s)} {
		t.Run(name, func(t *testing.T) {
			o.URLs = []string{"ldap://" + p.l.Addr().String()}
			a := newAuth(t, o)
			p.userBinds()
			for _, c := range []struct{ user, pw, dn string }{
				{"alice", "wrong", "uid=alice,ou=people," + suffix},
				{"nobody", "wrong", ""}, // the decoy DN in search mode
				{"nobody", "alice-pw", ""},
				{"twins@example.edu", "twin-pw", ""}, // ambiguous in search mode: refused like an unknown user
			} {
				wantInvalid(t, a, c.user, c.pw)
				binds := p.userBinds()
				if len(binds) != 1 {
					t.Errorf("%s: user binds %q; want exactly one", c.user, binds)
					continue
				}
				want := c.dn
				switch {
				case want != "":
				case name == "search":
					want = decoyRDN + "," + o.BaseDN
				default:
					want = "uid=" + c.user + ",ou=people," + suffix
				}
				if !strings.EqualFold(binds[0], want) {
					t.Errorf("%s: bound as %q; want %q", c.user, binds[0], want)
				}
			}
			wantIdentity(t, a, "alice", "alice-pw", aliceID)
		})
	}
}

// TestDecoyBindUnavailable: when the directory fails during the decoy bind,
// an unknown user gets the temporary error a real user would, never a
// different answer.
func TestDecoyBindUnavailable(t *testing.T) {
	s := startSlapd(t)
	a := newAuth(t, searchModeOpts(s))
	ctx := context.Background()
	wantInvalid(t, a, "nobody", "pw") // the pools now hold connections
	s.Stop()
	for _, u := range []string{"alice", "nobody"} {
		_, err := a.Authenticate(ctx, u, "pw")
		wantUnavailable(t, err)
	}
	// The decoy bind itself failing (the search answered just before).
	wantUnavailable(t, a.decoyBind(ctx, "nobody", "pw"))
	s.Start()
	wantInvalid(t, a, "nobody", "pw")
}
