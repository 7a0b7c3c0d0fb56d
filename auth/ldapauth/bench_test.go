package ldapauth

import (
	"context"
	"runtime"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

// parallel4 runs body in exactly 4 goroutines (4 concurrent clients),
// whatever GOMAXPROCS is, and reports logins per second.
func parallel4(b *testing.B, body func() error) {
	b.SetParallelism((4 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := body(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
}

// BenchmarkLDAPLogin measures logins per second against a local slapd with
// 4 concurrent clients: bind mode (DN template, bind, read own entry),
// search+bind mode (service search, user bind), and as baselines what a
// client without a pool does: dial, bind, read the entry, close (the same
// work as bind mode) and dial, bind, close (no attributes).
func BenchmarkLDAPLogin(b *testing.B) {
	s := startSlapd(b)
	b.Run("bind-mode", func(b *testing.B) {
		a, err := New(bindModeOpts(s))
		if err != nil {
			b.Fatal(err)
		}
		defer a.Close()
		parallel4(b, func() error {
			_, err := a.Authenticate(context.Background(), "alice", "alice-pw")
			return err
		})
	})
	b.Run("search-bind-mode", func(b *testing.B) {
		a, err := New(searchModeOpts(s))
		if err != nil {
			b.Fatal(err)
		}
		defer a.Close()
		parallel4(b, func() error {
			_, err := a.Authenticate(context.Background(), "alice", "alice-pw")
			return err
		})
	})
	b.Run("bind-mode-starttls", func(b *testing.B) {
		o := bindModeOpts(s)
		o.StartTLS, o.CAFile = true, s.caFile
		a, err := New(o)
		if err != nil {
			b.Fatal(err)
		}
		defer a.Close()
		parallel4(b, func() error {
			_, err := a.Authenticate(context.Background(), "alice", "alice-pw")
			return err
		})
	})
	b.Run("baseline-starttls-dial-bind-read-close", func(b *testing.B) {
		o := bindModeOpts(s)
		o.StartTLS, o.CAFile = true, s.caFile
		a, err := New(o) // only for its dialer and TLS configuration
		if err != nil {
			b.Fatal(err)
		}
		parallel4(b, func() error {
			c, err := a.dial(context.Background())
			if err != nil {
				return err
			}
			defer c.Close()
			dn := "uid=alice,ou=people," + suffix
			if err := c.Bind(dn, "alice-pw"); err != nil {
				return err
			}
			_, err = readEntry(c, dn, a.attrs)
			return err
		})
	})
	b.Run("baseline-dial-bind-read-close", func(b *testing.B) {
		parallel4(b, func() error {
			c, err := ldap.DialURL(s.URL)
			if err != nil {
				return err
			}
			defer c.Close()
			dn := "uid=alice,ou=people," + suffix
			if err := c.Bind(dn, "alice-pw"); err != nil {
				return err
			}
			_, err = readEntry(c, dn, []string{"uid", "homeDirectory", "mailQuota"})
			return err
		})
	})
	b.Run("baseline-dial-bind-close", func(b *testing.B) {
		parallel4(b, func() error {
			c, err := ldap.DialURL(s.URL)
			if err != nil {
				return err
			}
			defer c.Close()
			return c.Bind("uid=alice,ou=people,"+suffix, "alice-pw")
		})
	})
}
