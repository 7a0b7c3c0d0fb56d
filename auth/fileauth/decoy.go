package fileauth

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// A decoy is the stored hash a login is checked against when there is no
// real hash to check: the user is not in the file, may not log in, or has
// an entry that cannot be verified. It has the scheme and parameters that
// most entries of the file use (the same bcrypt cost, SHA-crypt rounds,
// Argon2 memory and passes, PBKDF2 rounds, salt and digest sizes) but a
// random salt and digest, so checking a password against it takes the
// time a wrong password for most users takes, and no password is known
// to match it (the result is thrown away anyway). It is not a real user's
// hash, and making it costs nothing: no hash is computed.
type decoy struct {
	scheme string
	hash   string
	class  string // its work class, for the load log
	// others counts the entries with a verifiable hash of another class:
	// a wrong password for them takes another time than an unknown user.
	others int
}

// chooseDecoy returns the decoy for entries (in file order): one imitating
// the work class most entries share, ties going to the class seen first;
// nil if no entry has a verifiable hash.
func chooseDecoy(entries []*entry) *decoy {
	count := map[string]int{}
	classes := make([]string, len(entries))
	top := 0
	for i, e := range entries {
		if c, ok := workClass(e.scheme, e.hash); ok {
			classes[i] = c
			count[c]++
			top = max(top, count[c])
		}
	}
	var best *entry
	var class string
	for i, e := range entries {
		if classes[i] != "" && count[classes[i]] == top {
			best, class = e, classes[i]
			break
		}
	}
	if best == nil {
		return nil
	}
	h, ok := imitate(best.scheme, best.hash)
	if !ok {
		return nil // cannot happen: workClass accepted the same hash
	}
	others := 0
	for c, n := range count {
		if c != class {
			others += n
		}
	}
	return &decoy{scheme: best.scheme, hash: h, class: class, others: others}
}

// workClass names the work verifying a password against encoded takes:
// hashes with the same class take the same time. ok is false for a hash
// this package cannot verify.
func workClass(scheme, encoded string) (class string, ok bool) {
	p, ok := parseParams(scheme, encoded)
	return p.class, ok
}

// imitate returns a hash in the format of encoded, with its parameters and
// sizes, and random salt and digest.
func imitate(scheme, encoded string) (string, bool) {
	p, ok := parseParams(scheme, encoded)
	if !ok {
		return "", false
	}
	return p.imitate(), true
}

// params is what parseParams learnt from one stored hash.
type params struct {
	class   string
	imitate func() string
}

// Alphabets of the random parts of decoys.
const (
	cryptAlphabet  = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	bcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	plainAlphabet  = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// parseParams reads the parameters of a stored hash with the same rules
// and work limits as its verifier.
func parseParams(scheme, encoded string) (params, bool) {
	switch scheme {
	case "BLF-CRYPT":
		return bcryptParams(encoded)
	case "SHA512-CRYPT":
		return cryptParams("$6$", encoded)
	case "SHA256-CRYPT":
		return cryptParams("$5$", encoded)
	case "MD5-CRYPT", "MD5":
		return cryptParams("$1$", encoded)
	case "CRYPT": // the $id$ prefixes verifyCryptAny takes
		if isBcryptID(encoded) {
			return bcryptParams(encoded)
		}
		if len(encoded) >= 3 {
			return cryptParams(encoded[:3], encoded)
		}
		return params{}, false
	case "ARGON2ID":
		return argon2Params("argon2id", encoded)
	case "ARGON2I":
		return argon2Params("argon2i", encoded)
	case "PBKDF2":
		return pbkdf2Params(encoded)
	case "PLAIN", "CLEARTEXT", "CLEAR":
		n := len(encoded)
		return params{class: "plain", imitate: func() string { return randomString(plainAlphabet, n) }}, true
	}
	return digestParams(scheme, encoded)
}

// isBcryptID reports the bcrypt variants Dovecot and crypt(3) write.
func isBcryptID(encoded string) bool {
	return strings.HasPrefix(encoded, "$2a$") || strings.HasPrefix(encoded, "$2b$") || strings.HasPrefix(encoded, "$2y$")
}

// bcryptParams reads "$2y$NN$" plus 53 characters of salt and digest; other
// bcrypt variants get no class (they are never the usual hash).
func bcryptParams(encoded string) (params, bool) {
	cost, err := bcrypt.Cost([]byte(encoded))
	if err != nil || cost > maxBcryptCost || len(encoded) != 60 || !isBcryptID(encoded) {
		return params{}, false
	}
	head := fmt.Sprintf("%s%02d$", encoded[:4], cost) // "$2y$10$"
	return params{class: fmt.Sprintf("bcrypt cost %d", cost),
		imitate: func() string { return head + randomString(bcryptAlphabet, 53) }}, true
}

// cryptParams reads "$id$[rounds=N$]salt$hash" (MD5-crypt, SHA-crypt).
func cryptParams(prefix, encoded string) (params, bool) {
	rest, ok := strings.CutPrefix(encoded, prefix)
	if !ok || (prefix != "$1$" && prefix != "$5$" && prefix != "$6$") {
		return params{}, false
	}
	head, rounds := prefix, 5000 // SHA-crypt's default
	if r, after, ok := strings.Cut(rest, "$"); ok && strings.HasPrefix(r, "rounds=") && prefix != "$1$" {
		n, err := strconv.Atoi(r[len("rounds="):])
		if err != nil || n > maxCryptRounds {
			return params{}, false
		}
		head, rounds, rest = head+r+"$", max(n, 1000), after // the library's minimum
	}
	salt, digest, ok := strings.Cut(rest, "$")
	if !ok {
		return params{}, false
	}
	class := prefix + " md5-crypt"
	if prefix != "$1$" {
		class = fmt.Sprintf("%s rounds=%d", prefix, rounds)
	}
	saltN, digestN := len(salt), len(digest)
	return params{class: class, imitate: func() string {
		return head + randomString(cryptAlphabet, saltN) + "$" + randomString(cryptAlphabet, digestN)
	}}, true
}

func argon2Params(variant, encoded string) (params, bool) {
	f := strings.Split(encoded, "$")
	if len(f) != 6 || f[0] != "" || f[1] != variant || f[2] != "v=19" {
		return params{}, false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 || m > 1<<20 || t > 64 {
		return params{}, false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(f[4])
	key, err2 := base64.RawStdEncoding.DecodeString(f[5])
	if err1 != nil || err2 != nil || len(key) < 4 || len(key) > 1024 {
		return params{}, false
	}
	saltN, keyN := len(salt), len(key)
	head := fmt.Sprintf("$%s$v=19$m=%d,t=%d,p=%d$", variant, m, t, p)
	return params{class: fmt.Sprintf("%s m=%d t=%d p=%d key=%d", variant, m, t, p, keyN), imitate: func() string {
		return head + base64.RawStdEncoding.EncodeToString(randomBytes(saltN)) + "$" +
			base64.RawStdEncoding.EncodeToString(randomBytes(keyN))
	}}, true
}

// pbkdf2Params reads Dovecot's $1$<salt>$<rounds>$<hex>.
func pbkdf2Params(encoded string) (params, bool) {
	f := strings.Split(encoded, "$")
	if len(f) != 5 || f[0] != "" || f[1] != "1" {
		return params{}, false
	}
	rounds, err := strconv.Atoi(f[3])
	key, herr := hex.DecodeString(f[4])
	if err != nil || herr != nil || rounds < 1 || rounds > maxPBKDF2Rounds || len(key) == 0 || len(key) > 64 {
		return params{}, false
	}
	saltN, keyN := len(f[2]), len(key)
	return params{class: fmt.Sprintf("pbkdf2 rounds=%d key=%d", rounds, keyN), imitate: func() string {
		return fmt.Sprintf("$1$%s$%d$%s", randomString(cryptAlphabet, saltN), rounds, hex.EncodeToString(randomBytes(keyN)))
	}}, true
}

// digestParams handles the salted and unsalted SHA schemes with their
// .HEX and .B64 variants, with lookupScheme's names and the verifiers'
// length rules: the decoy is random bytes of the stored length in the
// stored encoding.
func digestParams(scheme, encoded string) (params, bool) {
	if _, ok := schemes[scheme]; !ok && !strings.Contains(scheme, ".") {
		return params{}, false
	}
	d, ok := parseDigestScheme(scheme)
	if !ok {
		return params{}, false
	}
	size := d.newHash().Size()
	raw, err := d.decode(encoded)
	if err != nil || (d.salted && len(raw) <= size) || (!d.salted && len(raw) != size) {
		return params{}, false // the verifier refuses it before any work
	}
	n := len(raw)
	return params{class: "sha-" + strconv.Itoa(size*8) + " salted=" + strconv.FormatBool(d.salted) + " bytes=" + strconv.Itoa(n),
		imitate: func() string { return d.encode(randomBytes(n)) }}, true
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails: it crashes the program instead (Go 1.24)
	return b
}

// randomString returns n characters of alphabet (len(alphabet) ≤ 256);
// the small modulo bias does not matter for a decoy.
func randomString(alphabet string, n int) string {
	b := randomBytes(n)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
