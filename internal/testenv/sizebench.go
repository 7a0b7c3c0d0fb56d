package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// SizeBenchMaildirs writes the messages of the benchmarks that compare a
// Maildir whose file names carry each message's CRLF size (",S=" and
// ",W=", as Roost's and Dovecot's deliveries write them) with the same
// messages as Postfix writes them (no size in the name): the same
// messages, seen, go into the directory known with sizes in the names and
// into unknown without (both made with their parents if missing). Message
// i is header(i), which ends with the empty line, and a body of 72-octet
// lines. ROOST_BENCH_MESSAGES sets how many (default 5,000) and
// ROOST_BENCH_BODY how many octets of body (default 16 KiB); it returns
// how many messages it wrote.
func SizeBenchMaildirs(b *testing.B, known, unknown string, header func(i int) string) (n int) {
	b.Helper()
	n, body := 5000, 16<<10
	if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_BODY")); err == nil && v > 0 {
		body = v
	}
	line := strings.Repeat("x", 71) + "\n"
	for _, dir := range []string{known, unknown} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		for i := range n {
			msg := header(i) + strings.Repeat(line, body/len(line))
			name := fmt.Sprintf("%d.M%dP1.bench", 1700000000+i, i)
			if dir == known {
				name += fmt.Sprintf(",S=%d,W=%d", len(msg), len(msg)+strings.Count(msg, "\n"))
			}
			if err := os.WriteFile(filepath.Join(dir, name+":2,S"), []byte(msg), 0o600); err != nil {
				b.Fatal(err)
			}
		}
	}
	return n
}
