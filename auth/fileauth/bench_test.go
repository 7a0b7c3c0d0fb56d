package fileauth

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkLogin measures passwd-file logins per second for each scheme,
// with the parameters Hash uses (BLF-CRYPT cost 10) and, for schemes whose
// doveadm default differs, doveadm's (BLF-CRYPT cost 5). PLAIN is the
// baseline: file lookup and constant-time compare only, so the ratio to it
// is the cost of the hash. unknown-user costs what the file's first user
// does (ARGON2ID here): unknown names are checked against a decoy hash.
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
