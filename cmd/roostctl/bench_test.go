package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// benchSite builds a mail root of n users, each with a current maildirsize
// (as the daemons keep it) and a passwd-file listing them.
func benchSite(b *testing.B, n int) *site {
	b.Helper()
	dir := b.TempDir()
	s := &site{dir: dir, root: filepath.Join(dir, "vmail"), config: filepath.Join(dir, "roost.yaml"), users: filepath.Join(dir, "users")}
	var users strings.Builder
	for i := range n {
		name := fmt.Sprintf("user%05d", i)
		fmt.Fprintf(&users, "%s:{PLAIN}x::::::userdb_quota_rule=*:bytes=262144000\n", name)
		md := filepath.Join(s.root, name, "Maildir")
		for _, d := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(md, d), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		size := fmt.Sprintf("262144000S\n%d %d\n", (i%250)<<20, i%5000)
		if err := os.WriteFile(filepath.Join(md, "maildirsize"), []byte(size), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(s.users, []byte(users.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg := fmt.Sprintf("mail:\n  root: %s\nauth:\n  backend: file\n  file:\n    path: %s\n", s.root, s.users)
	if err := os.WriteFile(s.config, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	return s
}

// bigMaildirSite is one user with 100,000 (empty) message files named with
// their sizes, and a current maildirsize that accounts for them.
func bigMaildirSite(b *testing.B) *site {
	b.Helper()
	s := benchSite(b, 1)
	md := filepath.Join(s.root, "user00000", "Maildir")
	for i := range 100000 {
		f, err := os.Create(filepath.Join(md, "cur", fmt.Sprintf("%d.M%dP1.bench,S=10240,W=10400:2,S", 1700000000+i, i)))
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	size := fmt.Sprintf("2147483648S\n%d %d\n", int64(100000)*10240, 100000)
	if err := os.WriteFile(filepath.Join(md, "maildirsize"), []byte(size), 0o600); err != nil {
		b.Fatal(err)
	}
	return s
}

func runBin(b *testing.B, s *site, args ...string) {
	cmd := exec.Command(roostctlBin, append([]string{"--config", s.config}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("roostctl %v: %v\n%s", args, err, out)
	}
}

// BenchmarkQuotaReport10k: `roostctl quota report --over 90` over 10,000
// users with current maildirsize files, the whole process per op.
func BenchmarkQuotaReport10k(b *testing.B) {
	s := benchSite(b, 10000)
	b.ResetTimer()
	for b.Loop() {
		runBin(b, s, "quota", "report", "--over", "90")
	}
}

// BenchmarkQuotaGet100k: `roostctl quota get --json` for a user with
// 100,000 messages and a current maildirsize, the whole process per op:
// it must not walk the message files.
func BenchmarkQuotaGet100k(b *testing.B) {
	s := bigMaildirSite(b)
	b.ResetTimer()
	for b.Loop() {
		runBin(b, s, "quota", "get", "user00000", "--json")
	}
}

// BenchmarkProcessBaseline: `roostctl pw hash --scheme PLAIN`, a command
// that loads nothing, as the process start-up cost to compare with.
func BenchmarkProcessBaseline(b *testing.B) {
	for b.Loop() {
		cmd := exec.Command(roostctlBin, "pw", "hash", "--scheme", "PLAIN")
		cmd.Stdin = strings.NewReader("x\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
	}
}

// BenchmarkQuotaGet100kInProcess is BenchmarkQuotaGet100k without the
// process start: config, passwd-file, lookup and maildirsize per op.
func BenchmarkQuotaGet100kInProcess(b *testing.B) {
	s := bigMaildirSite(b)
	b.ResetTimer()
	for b.Loop() {
		if err := run(b.Context(), []string{"--config", s.config, "quota", "get", "user00000", "--json"}, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQuotaReport10kInProcess is BenchmarkQuotaReport10k without the
// process start.
func BenchmarkQuotaReport10kInProcess(b *testing.B) {
	s := benchSite(b, 10000)
	b.ResetTimer()
	for b.Loop() {
		if err := run(b.Context(), []string{"--config", s.config, "quota", "report", "--over", "90"}, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
