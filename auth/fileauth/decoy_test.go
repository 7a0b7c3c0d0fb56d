package fileauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/roost-mail/roost/auth"
)

// TestDecoyImitatesEveryScheme: for every stored hash this package can
// verify (doveadm's and our own), the decoy has the same work class, is not
// the hash itself, and the verifier accepts its format (no error), so
// checking it does the whole work rather than stopping at a parse error.
func TestDecoyImitatesEveryScheme(t *testing.T) {
	vs := doveadmVectors(t)
	for _, s := range Schemes() {
		h, err := Hash(s, "pw")
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, vector{s, "pw", h})
	}
	for _, v := range vs {
		scheme, h := splitField(v.field)
		class, ok := workClass(scheme, h)
		if !ok {
			t.Errorf("%s: no work class for a valid hash", v.field)
			continue
		}
		d, ok := imitate(scheme, h)
		if !ok || d == h {
			t.Errorf("%s: decoy %q, %v", v.field, d, ok)
			continue
		}
		if c, _ := workClass(scheme, d); c != class {
			t.Errorf("%s: decoy class %q, hash class %q", v.field, c, class)
		}
		if ok, err := verifyPassword(scheme, d, v.password); ok || err != nil {
			t.Errorf("%s: verifying the decoy %q = %v, %v; want false, nil", v.field, d, ok, err)
		}
	}
}

func TestWorkClasses(t *testing.T) {
	same := [][2]string{
		{"{SHA512-CRYPT}$6$salt$x", "{CRYPT}$6$rounds=5000$othersalt$y"},
		{"{BLF-CRYPT}$2y$05$" + strings.Repeat("a", 53), "$2a$05$" + strings.Repeat("b", 53)},
		{"{SSHA512}" + strings.Repeat("A", 96), "{SSHA512.B64}" + strings.Repeat("B", 96)},
	}
	differ := [][2]string{
		{"{SHA512-CRYPT}$6$salt$x", "{SHA512-CRYPT}$6$rounds=10000$salt$x"},
		{"{SHA512-CRYPT}$6$salt$x", "{SHA256-CRYPT}$5$salt$x"},
		{"{BLF-CRYPT}$2y$05$" + strings.Repeat("a", 53), "{BLF-CRYPT}$2y$10$" + strings.Repeat("a", 53)},
		{"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", "{ARGON2ID}$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"},
		{"{PBKDF2}$1$salt$5000$00112233", "{PBKDF2}$1$salt$10000$00112233"},
	}
	class := func(field string) string {
		s, h := splitField(field)
		c, ok := workClass(s, h)
		if !ok {
			t.Fatalf("%s: no work class", field)
		}
		return c
	}
	for _, p := range same {
		if a, b := class(p[0]), class(p[1]); a != b {
			t.Errorf("%s and %s: classes %q and %q; want equal", p[0], p[1], a, b)
		}
	}
	for _, p := range differ {
		if a, b := class(p[0]), class(p[1]); a == b {
			t.Errorf("%s and %s: both class %q", p[0], p[1], a)
		}
	}
	for _, bad := range []string{"{SHA512-CRYPT}$6$nosalt", "{BLF-CRYPT}$2y$17$" + strings.Repeat("a", 53),
		"{ARGON2ID}$argon2id$v=19$m=2000000,t=3,p=1$c2FsdA$aGFzaGhhc2g", "{NOSUCH}x", "{CRYPT}abDES", "{CRYPT}$2x$05$" + strings.Repeat("a", 53), "{SSHA}!!"} {
		s, h := splitField(bad)
		if c, ok := workClass(s, h); ok {
			t.Errorf("%s: class %q for a hash the verifier refuses", bad, c)
		}
	}
}

// verifyCall is one check through the injected verifier.
type verifyCall struct {
	scheme, hash string
	err          error
}

// countVerify replaces a's verifier with one that records each call.
func countVerify(a *Authenticator) func() []verifyCall {
	var mu sync.Mutex
	var calls []verifyCall
	a.verify = func(scheme, encoded, password string) (bool, error) {
		ok, err := verifyPassword(scheme, encoded, password)
		mu.Lock()
		calls = append(calls, verifyCall{scheme, encoded, err})
		mu.Unlock()
		return ok, err
	}
	return func() []verifyCall {
		mu.Lock()
		defer mu.Unlock()
		c := calls
		calls = nil
		return c
	}
}

// TestEveryRefusalChecksOneHash: a login for an unknown user, a user who may
// not log in, one without a password or with an unverifiable entry checks
// exactly one well-formed hash of the file's usual class (the decoy), as a
// wrong password for an ordinary user does. Counted through the injected
// verifier; no timing is asserted.
func TestEveryRefusalChecksOneHash(t *testing.T) {
	vs := map[string]string{} // scheme → field, password "secret"
	for _, v := range doveadmVectors(t) {
		if v.password == "secret" && vs[v.scheme] == "" {
			vs[v.scheme] = v.field
		}
	}
	// The first line is a PLAIN service account: a decoy taken from the
	// first entry would be a string compare, not a SHA512-CRYPT.
	users := strings.Join([]string{
		"admin:{PLAIN}admin-pw",
		"alice:" + vs["SHA512-CRYPT"],
		"bob:" + vs["SHA512-CRYPT"],
		"carol:" + vs["BLF-CRYPT"],
		"dave:" + vs["SHA512-CRYPT"] + "::::::nologin",
		"erin:{NOSUCHSCHEME}xyz",
		"frank:",
		"grace:{SHA512-CRYPT}$6$broken",
		"ivan:" + vs["SHA512-CRYPT"] + "::::::allow_nets=10.0.0.0/8",
	}, "\n") + "\n"
	a, _, logs := newTestAuth(t, users)
	if want := `usual_hash="$6$ rounds=5000" other_hashes=2`; !strings.Contains(logs.String(), want) {
		t.Errorf("load log lacks %s:\n%s", want, logs)
	}
	calls := countVerify(a)
	tab, err := a.current()
	if err != nil {
		t.Fatal(err)
	}
	s, h := splitField(vs["SHA512-CRYPT"])
	usual, _ := workClass(s, h)
	if c, _ := workClass(tab.decoy.scheme, tab.decoy.hash); c != usual {
		t.Fatalf("decoy class %q; want the most common, %q", c, usual)
	}
	for _, e := range tab.byUser {
		if e.hash == tab.decoy.hash {
			t.Fatalf("the decoy is %s's hash", e.user)
		}
	}
	ctx := context.Background()
	for _, c := range []struct {
		user, pw string
		decoy    bool // the one completed check is the decoy
	}{
		{"nobody", "secret", true},
		{"nobody@example.edu", "admin-pw", true},
		{"alice", "wrong", false},
		{"dave", "secret", true},  // nologin
		{"erin", "xyz", true},     // unsupported scheme
		{"frank", "x", true},      // no password
		{"grace", "secret", true}, // malformed hash
		{"ivan", "secret", true},  // unsupported passdb field
	} {
		if _, err := a.Authenticate(ctx, c.user, c.pw); !errors.Is(err, auth.ErrInvalidCredentials) {
			t.Errorf("%s: %v; want ErrInvalidCredentials", c.user, err)
		}
		var done []verifyCall
		for _, call := range calls() {
			if call.err == nil {
				done = append(done, call)
			}
		}
		if len(done) != 1 {
			t.Errorf("%s: %d completed hash checks %v; want 1", c.user, len(done), done)
			continue
		}
		cl, _ := workClass(done[0].scheme, done[0].hash)
		if isDecoy := done[0].hash == tab.decoy.hash; isDecoy != c.decoy || cl != usual {
			t.Errorf("%s: checked a %q hash (decoy %v); want class %q, decoy %v", c.user, cl, isDecoy, usual, c.decoy)
		}
	}
	// An empty password is refused before any work, for everyone.
	for _, u := range []string{"alice", "nobody"} {
		if _, err := a.Authenticate(ctx, u, ""); !errors.Is(err, auth.ErrInvalidCredentials) {
			t.Errorf("%s with an empty password: %v", u, err)
		}
		if n := len(calls()); n != 0 {
			t.Errorf("%s with an empty password: %d hash checks; want 0", u, n)
		}
	}
	if _, err := a.Authenticate(ctx, "bob", "secret"); err != nil {
		t.Errorf("bob: %v", err)
	}
	if n := len(calls()); n != 1 {
		t.Errorf("a correct password: %d hash checks; want 1", n)
	}
}

// TestDecoyTies: with no majority the class seen first wins; a file without
// any verifiable hash has no decoy and still refuses unknown users.
func TestDecoyTies(t *testing.T) {
	vs := doveadmVectors(t)
	field := func(scheme string) string {
		for _, v := range vs {
			if v.scheme == scheme {
				return v.field
			}
		}
		t.Fatalf("no %s vector", scheme)
		return ""
	}
	for _, c := range []struct {
		lines []string
		want  string // scheme of the decoy, "" for none
	}{
		{[]string{"a:" + field("SSHA256"), "b:" + field("PBKDF2"), "c:" + field("PBKDF2"), "d:" + field("SSHA256")}, "SSHA256"},
		{[]string{"a:" + field("SSHA256"), "b:" + field("PBKDF2"), "c:" + field("PBKDF2")}, "PBKDF2"},
		{[]string{"a:", "b:{NOSUCH}x", "c:{SHA512-CRYPT}$6$broken"}, ""},
	} {
		a, _, _ := newTestAuth(t, strings.Join(c.lines, "\n")+"\n")
		tab, err := a.current()
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if tab.decoy != nil {
			got = tab.decoy.scheme
		}
		if got != c.want {
			t.Errorf("%q: decoy scheme %q; want %q", c.lines, got, c.want)
		}
		if _, err := a.Authenticate(context.Background(), "nobody", "pw"); !errors.Is(err, auth.ErrInvalidCredentials) {
			t.Errorf("unknown user: %v", err)
		}
	}
}

// FuzzDecoy checks that no stored hash makes workClass or imitate panic,
// that a decoy always has the class of the hash it imitates, and that the
// verifier takes every decoy (checked for cheap classes only, to keep
// fuzzing fast): a decoy it refused would cost no work.
func FuzzDecoy(f *testing.F) {
	f.Add("SHA512-CRYPT", "$6$rounds=6000$salt$hash")
	f.Add("CRYPT", "$2y$05$.bjjVI598tyr.DPHL0DCXewLcGvr4WcABUHlW9RaC/FssZCD52Sk.")
	f.Add("ARGON2ID", "$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")
	f.Add("PBKDF2", "$1$salt$5000$00112233")
	f.Add("SSHA256.HEX", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff0011")
	f.Fuzz(func(t *testing.T, scheme, encoded string) {
		class, ok := workClass(scheme, encoded)
		d, dok := imitate(scheme, encoded)
		if ok != dok {
			t.Fatalf("workClass ok=%v, imitate ok=%v", ok, dok)
		}
		if !ok {
			return
		}
		if c, ok := workClass(scheme, d); !ok || c != class {
			t.Fatalf("decoy %q: class %q, %v; want %q", d, c, ok, class)
		}
		if strings.ContainsAny(d, ":\n") {
			t.Fatalf("decoy %q could not be a passwd-file field", d)
		}
		if cheap(class) {
			if _, err := verifyPassword(scheme, d, "password"); err != nil {
				t.Fatalf("decoy %q of class %q: the verifier refuses it: %v", d, class, err)
			}
		}
	})
}

// cheap reports whether verifying a hash of class takes at most about a
// millisecond.
func cheap(class string) bool {
	var n, m, t, p, k int
	switch {
	case strings.HasPrefix(class, "bcrypt"):
		_, err := fmt.Sscanf(class, "bcrypt cost %d", &n)
		return err == nil && n <= 5
	case strings.HasPrefix(class, "$5$"), strings.HasPrefix(class, "$6$"):
		_, err := fmt.Sscanf(class[4:], "rounds=%d", &n)
		return err == nil && n <= 5000
	case strings.HasPrefix(class, "argon2"):
		_, err := fmt.Sscanf(class[strings.Index(class, " ")+1:], "m=%d t=%d p=%d key=%d", &m, &t, &p, &k)
		return err == nil && m*t <= 1024 && p <= 4
	case strings.HasPrefix(class, "pbkdf2"):
		_, err := fmt.Sscanf(class, "pbkdf2 rounds=%d key=%d", &n, &k)
		return err == nil && n <= 5000
	}
	return true // MD5-crypt, plain text, salted and unsalted digests
}
