package auth

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSize parses a quota size written with Dovecot's units: an integer
// with an optional suffix K, M, G or T (powers of 1024, case-insensitive),
// optionally followed by "B" ("250M" = "250MB" = 262144000). A bare number,
// or one with the suffix "B" alone, is taken as a number of unit bytes.
// Dovecot's storage= limit uses unit 1024 (kilobytes); everything else 1.
func ParseSize(s string, unit int64) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	if unit <= 0 {
		unit = 1
	}
	mult := unit
	if b, ok := strings.CutSuffix(t, "B"); ok {
		t = b
		mult = 1
	}
	if n := len(t); n > 0 {
		if p := strings.IndexByte("KMGT", t[n-1]); p >= 0 {
			mult = int64(1) << (10 * (p + 1))
			t = strings.TrimSpace(t[:n-1])
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || t == "" || t[0] == '+' {
		return 0, fmt.Errorf("invalid size %q: use a number with an optional unit K, M, G or T (e.g. 250M)", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}
