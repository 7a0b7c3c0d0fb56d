package fileauth

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
)

// BenchmarkLogin measures passwd-file logins per second for each scheme,
// with the parameters Hash uses (BLF-CRYPT cost 10) and, for schemes whose
// doveadm default differs, doveadm's (BLF-CRYPT cost 5). PLAIN is the
// baseline: file lookup and constant-time compare only, so the ratio to it
// is the cost of the hash. unknown-user is checked against a decoy of the
// file's most common work class, here PLAIN and CLEARTEXT (one class, two
// entries; every other class has one), so it costs a compare; see
// BenchmarkUnknownUserTiming for files where one scheme is the rule.
func BenchmarkLogin(b *testing.B) {
	const pw = "correct horse battery staple"
	var lines, names []string
	add := func(name, field string) {
		lines = append(lines, fmt.Sprintf("%s:%s:1000:1000::/home/%s::userdb_quota_rule=*:storage=250M", strings.ToLower(name), field, name))
		names = append(names, name)
	}
	for _, s := range Schemes() {
		h, err := Hash(s, pw)
		if err != nil {
			b.Fatal(err)
		}
		add(s, h)
	}
	for _, v := range doveadmVectors(b) {
		if v.password == "secret" && (v.scheme == "BLF-CRYPT" || v.scheme == "MD5-CRYPT") && !strings.Contains(v.field, "$06$") {
			add(v.scheme+"-doveadm", v.field)
		}
	}
	path := filepath.Join(b.TempDir(), "users")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	a, err := New(Options{Path: path})
	if err != nil {
		b.Fatal(err)
	}
	names = append(names, "unknown-user")
	for _, name := range names {
		password := pw
		if strings.HasSuffix(name, "-doveadm") {
			password = "secret"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				_, err := a.Authenticate(context.Background(), strings.ToLower(name), password)
				if (err != nil) != (name == "unknown-user") {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}

// BenchmarkUnknownUserTiming compares a login for a name that is not in the
// file with a wrong password for one that is, for files of SHA512-CRYPT,
// BLF-CRYPT (cost 10) and ARGON2ID users made by Hash, each file starting
// with a PLAIN service account (so a decoy taken from the first line would
// cost nothing). The two kinds of attempt alternate, in alternating order;
// it reports their medians and unknown/known, which is 1 when timing does
// not tell whether a user exists. Run with -benchtime=100x or more.
func BenchmarkUnknownUserTiming(b *testing.B) {
	const users = 4
	for _, scheme := range []string{"SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID"} {
		lines := []string{"admin:{PLAIN}service-pw"}
		for i := range users {
			h, err := Hash(scheme, fmt.Sprintf("pw-%d", i))
			if err != nil {
				b.Fatal(err)
			}
			lines = append(lines, fmt.Sprintf("user%d:%s", i, h))
		}
		path := filepath.Join(b.TempDir(), "users")
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			b.Fatal(err)
		}
		a, err := New(Options{Path: path})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(scheme, func(b *testing.B) {
			var known, unknown []time.Duration
			try := func(user string, into *[]time.Duration) {
				start := time.Now()
				if _, err := a.Authenticate(context.Background(), user, "wrong password"); err == nil {
					b.Fatal("a wrong password was accepted")
				}
				*into = append(*into, time.Since(start))
			}
			i := 0
			for b.Loop() {
				k, u := fmt.Sprintf("user%d", i%users), fmt.Sprintf("nobody%d", i)
				if i%2 == 0 {
					try(k, &known)
					try(u, &unknown)
				} else {
					try(u, &unknown)
					try(k, &known)
				}
				i++
			}
			testenv.ReportPairedTiming(b, known, unknown)
		})
	}
}
