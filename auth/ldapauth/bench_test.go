package ldapauth

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/auth/fileauth"
	"github.com/roost-mail/roost/internal/testenv"
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
			c, _, err := a.dial(context.Background())
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

// BenchmarkUnknownUserTiming compares, with one client, a login for a name
// the directory does not have with a wrong password for alice (whose
// userPassword slapd compares as clear text) and for erin (a {CRYPT}
// SHA512-crypt hash, 5000 rounds, which slapd checks with crypt(3)), in
// search+bind and bind mode. The two kinds of attempt alternate, in
// alternating order; it reports their medians and unknown/known, which is 1
// when timing does not tell whether a user exists.
func BenchmarkUnknownUserTiming(b *testing.B) {
	s := startSlapd(b)
	h, err := fileauth.Hash("SHA512-CRYPT", "erin-pw")
	if err != nil {
		b.Fatal(err)
	}
	addEntry(b, s, "uid=erin,ou=people,"+suffix, map[string][]string{"objectClass": {"inetOrgPerson"},
		"uid": {"erin"}, "cn": {"Erin"}, "sn": {"E"}, "userPassword": {strings.Replace(h, "{SHA512-CRYPT}", "{CRYPT}", 1)}})
	for _, mode := range []struct {
		name string
		o    Options
	}{{"search-bind", searchModeOpts(s)}, {"bind", bindModeOpts(s)}} {
		a, err := New(mode.o)
		if err != nil {
			b.Fatal(err)
		}
		defer a.Close()
		for _, known := range []string{"alice", "erin"} {
			b.Run(mode.name+"/"+known, func(b *testing.B) {
				var kt, ut []time.Duration
				try := func(user string, into *[]time.Duration) {
					start := time.Now()
					_, err := a.Authenticate(context.Background(), user, "wrong password")
					*into = append(*into, time.Since(start))
					if err != auth.ErrInvalidCredentials {
						b.Fatalf("%s: %v", user, err)
					}
				}
				i := 0
				for b.Loop() {
					u := fmt.Sprintf("nobody%d", i)
					if i%2 == 0 {
						try(known, &kt)
						try(u, &ut)
					} else {
						try(u, &ut)
						try(known, &kt)
					}
					i++
				}
				testenv.ReportPairedTiming(b, kt, ut)
			})
		}
	}
}

// addEntry adds an entry to s as the root account.
func addEntry(b *testing.B, s *slapd, dn string, attrs map[string][]string) {
	c, err := ldap.DialURL(s.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Bind(testenv.SlapdRootDN, testenv.SlapdRootPassword); err != nil {
		b.Fatal(err)
	}
	req := ldap.NewAddRequest(dn, nil)
	for k, v := range attrs {
		req.Attribute(k, v)
	}
	if err := c.Add(req); err != nil {
		b.Fatal(err)
	}
}
