package fileauth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/GehirnInc/crypt/md5_crypt"
	"github.com/GehirnInc/crypt/sha256_crypt"
	"github.com/GehirnInc/crypt/sha512_crypt"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// errMalformedHash reports a stored hash this package cannot read. Its text
// never contains the hash.
var errMalformedHash = errors.New("stored password hash is malformed")

// verifier checks password against the encoded hash that followed the
// {SCHEME} prefix. It returns false for a wrong password and an error only
// when the stored hash cannot be used.
type verifier func(encoded, password string) (bool, error)

// schemeInfo describes one password scheme of Dovecot's passwd-file.
type schemeInfo struct {
	verify verifier
	// generate is nil for schemes kept only to read legacy files.
	generate func(password string) (string, error)
}

// schemes maps Dovecot's scheme names (upper case) to their code. The
// verifier is chosen from the {SCHEME} prefix only, never from the hash's
// shape: Dovecot's PBKDF2 starts with "$1$" like MD5-CRYPT.
var schemes = map[string]schemeInfo{
	"BLF-CRYPT":    {verify: verifyBcrypt, generate: generateBcrypt},
	"SHA512-CRYPT": {verify: verifyCrypt("$6$"), generate: generateShaCrypt("$6$")},
	"SHA256-CRYPT": {verify: verifyCrypt("$5$"), generate: generateShaCrypt("$5$")},
	"MD5-CRYPT":    {verify: verifyCrypt("$1$")},
	"MD5":          {verify: verifyCrypt("$1$")}, // Dovecot's alias of MD5-CRYPT
	"CRYPT":        {verify: verifyCryptAny},
	"ARGON2ID":     {verify: verifyArgon2("argon2id"), generate: generateArgon2("argon2id", 65536, 3)},
	"ARGON2I":      {verify: verifyArgon2("argon2i"), generate: generateArgon2("argon2i", 32768, 4)},
	"SSHA512":      {verify: verifySalted(sha512.New), generate: generateSalted(sha512.New)},
	"SSHA256":      {verify: verifySalted(sha256.New), generate: generateSalted(sha256.New)},
	"SSHA":         {verify: verifySalted(sha1.New), generate: generateSalted(sha1.New)},
	"SHA512":       {verify: verifyDigest(sha512.New)},
	"SHA256":       {verify: verifyDigest(sha256.New)},
	"SHA":          {verify: verifyDigest(sha1.New)},
	"SHA1":         {verify: verifyDigest(sha1.New)},
	"PBKDF2":       {verify: verifyPBKDF2, generate: generatePBKDF2},
	"PLAIN":        {verify: verifyPlain, generate: generatePlain},
	"CLEARTEXT":    {verify: verifyPlain, generate: generatePlain},
	"CLEAR":        {verify: verifyPlain, generate: generatePlain},
}

// Schemes returns the schemes Hash can produce, strongest first. Files may
// also hold MD5-CRYPT, CRYPT ($1$, $2y$, $5$, $6$), SHA, SHA1, SHA256 and
// SHA512 hashes, which are verified but never produced.
func Schemes() []string {
	return []string{"ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT",
		"PBKDF2", "SSHA512", "SSHA256", "SSHA", "PLAIN", "CLEARTEXT"}
}

// Hash returns password hashed with scheme, ready for a passwd-file's
// password field ("{SHA512-CRYPT}$6$..."), as `doveadm pw -s SCHEME` prints
// it. BLF-CRYPT uses cost 10 (Dovecot's default is 5), SHA-crypt 5000
// rounds, ARGON2ID m=64MiB t=3 p=1 and ARGON2I m=32MiB t=4 p=1, as Dovecot.
func Hash(scheme, password string) (string, error) {
	name := strings.ToUpper(strings.TrimSpace(scheme))
	s, ok := schemes[name]
	if !ok || s.generate == nil {
		return "", fmt.Errorf("cannot hash with scheme %q: use one of %s", scheme, strings.Join(Schemes(), ", "))
	}
	if password == "" {
		return "", errors.New("refusing to hash an empty password")
	}
	h, err := s.generate(password)
	if err != nil {
		return "", err
	}
	return "{" + name + "}" + h, nil
}

// verifyPassword checks password against a stored {SCHEME}hash split into
// scheme (upper case, maybe with a .HEX/.B64 suffix) and encoded.
func verifyPassword(scheme, encoded, password string) (bool, error) {
	s, ok := lookupScheme(scheme)
	if !ok {
		return false, fmt.Errorf("password scheme {%s} is not supported", scheme)
	}
	return s.verify(encoded, password)
}

// lookupScheme finds a scheme, applying an encoding suffix (.HEX, .B64,
// .BASE64) to the digest schemes that take one.
func lookupScheme(scheme string) (schemeInfo, bool) {
	if s, ok := schemes[scheme]; ok {
		return s, true
	}
	if !strings.Contains(scheme, ".") {
		return schemeInfo{}, false
	}
	d, ok := parseDigestScheme(scheme)
	if !ok {
		return schemeInfo{}, false
	}
	if d.salted {
		return schemeInfo{verify: verifySaltedEnc(d.newHash, d.decode)}, true
	}
	return schemeInfo{verify: verifyDigestEnc(d.newHash, d.decode)}, true
}

// digestScheme is what a SHA-family scheme name says: SHA, SHA1, SHA256,
// SHA512, salted with an S in front, stored in base64 or, with a .HEX
// suffix, in hex (.B64 and .BASE64 name base64).
type digestScheme struct {
	newHash func() hash.Hash
	salted  bool
	encode  func([]byte) string
	decode  func(string) ([]byte, error)
}

func parseDigestScheme(scheme string) (digestScheme, bool) {
	base, enc, suffixed := strings.Cut(scheme, ".")
	d := digestScheme{salted: strings.HasPrefix(base, "SSHA"), encode: base64.StdEncoding.EncodeToString, decode: base64.StdEncoding.DecodeString}
	if d.salted {
		base = base[1:]
	}
	switch base {
	case "SHA", "SHA1":
		d.newHash = sha1.New
	case "SHA256":
		d.newHash = sha256.New
	case "SHA512":
		d.newHash = sha512.New
	default:
		return digestScheme{}, false
	}
	switch {
	case !suffixed, enc == "B64", enc == "BASE64":
	case enc == "HEX":
		d.encode, d.decode = hex.EncodeToString, hex.DecodeString
	default:
		return digestScheme{}, false
	}
	return d, true
}

func verifyPlain(encoded, password string) (bool, error) {
	return subtle.ConstantTimeCompare([]byte(encoded), []byte(password)) == 1, nil
}

func generatePlain(password string) (string, error) {
	if strings.ContainsAny(password, ":\r\n") {
		return "", errors.New("a PLAIN password cannot contain ':' or a line break in a passwd-file: use a hashed scheme")
	}
	return password, nil
}

// Work limits for stored hashes: a typo'd or hostile passwd-file line must
// not make each login burn the CPU for minutes. They are far above what
// Dovecot, doveadm, passlib and glibc write by default.
const (
	maxBcryptCost   = 16         // 2^16 rounds, seconds per login
	maxCryptRounds  = 10_000_000 // SHA-crypt; the default is 5000
	maxPBKDF2Rounds = 10_000_000
)

func verifyBcrypt(encoded, password string) (bool, error) {
	if cost, err := bcrypt.Cost([]byte(encoded)); err != nil || cost > maxBcryptCost {
		return false, errMalformedHash
	}
	err := bcrypt.CompareHashAndPassword([]byte(encoded), []byte(password))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return false, nil
	}
	return false, errMalformedHash
}

func generateBcrypt(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("BLF-CRYPT: %w", err)
	}
	// Dovecot writes the $2y$ variant; the algorithm is the same as $2a$.
	return "$2y$" + strings.TrimPrefix(string(h), "$2a$"), nil
}

// verifyCryptAny is Dovecot's CRYPT scheme: crypt(3) with the algorithm
// named by the hash's $id$. Traditional DES crypt is not supported.
func verifyCryptAny(encoded, password string) (bool, error) {
	switch {
	case strings.HasPrefix(encoded, "$2a$"), strings.HasPrefix(encoded, "$2b$"), strings.HasPrefix(encoded, "$2y$"):
		return verifyBcrypt(encoded, password)
	case strings.HasPrefix(encoded, "$1$"), strings.HasPrefix(encoded, "$5$"), strings.HasPrefix(encoded, "$6$"):
		return verifyCrypt(encoded[:3])(encoded, password)
	}
	return false, errors.New("CRYPT hash has no supported $id$ ($1$, $2y$, $5$ or $6$; DES crypt is not supported)")
}

// verifyCrypt verifies MD5-crypt ($1$) and Drepper's SHA-crypt ($5$, $6$).
// Only "$id$[rounds=N$]salt" is handed to the library: it would otherwise
// take the hash after a rounds= salt as part of the salt.
func verifyCrypt(prefix string) verifier {
	return func(encoded, password string) (bool, error) {
		rest, ok := strings.CutPrefix(encoded, prefix)
		if !ok {
			return false, errMalformedHash
		}
		setting := prefix
		if r, after, ok := strings.Cut(rest, "$"); ok && strings.HasPrefix(r, "rounds=") && prefix != "$1$" {
			if n, err := strconv.Atoi(r[len("rounds="):]); err != nil || n > maxCryptRounds {
				return false, errMalformedHash
			}
			setting += r + "$"
			rest = after
		}
		salt, _, ok := strings.Cut(rest, "$")
		if !ok {
			return false, errMalformedHash
		}
		setting += salt
		var c interface {
			Generate(key, salt []byte) (string, error)
		}
		switch prefix {
		case "$1$":
			c = md5_crypt.New()
		case "$5$":
			c = sha256_crypt.New()
		default:
			c = sha512_crypt.New()
		}
		got, err := c.Generate([]byte(password), []byte(setting))
		if err != nil {
			return false, errMalformedHash
		}
		return subtle.ConstantTimeCompare([]byte(got), []byte(encoded)) == 1, nil
	}
}

func generateShaCrypt(prefix string) func(string) (string, error) {
	return func(password string) (string, error) {
		salt, err := randomSalt(16)
		if err != nil {
			return "", err
		}
		var h string
		if prefix == "$5$" {
			h, err = sha256_crypt.New().Generate([]byte(password), []byte(prefix+salt))
		} else {
			h, err = sha512_crypt.New().Generate([]byte(password), []byte(prefix+salt))
		}
		return h, err
	}
}

// randomSalt returns n characters from crypt(3)'s salt alphabet.
func randomSalt(n int) (string, error) {
	const alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}

// verifyArgon2 reads the PHC string format libargon2 and Dovecot write:
// $argon2id$v=19$m=65536,t=3,p=1$<salt>$<hash>, base64 without padding.
func verifyArgon2(variant string) verifier {
	return func(encoded, password string) (bool, error) {
		f := strings.Split(encoded, "$")
		if len(f) != 6 || f[0] != "" || f[1] != variant || f[2] != "v=19" {
			return false, errMalformedHash
		}
		var m, t uint32
		var p uint8
		if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 {
			return false, errMalformedHash
		}
		salt, err1 := base64.RawStdEncoding.DecodeString(f[4])
		want, err2 := base64.RawStdEncoding.DecodeString(f[5])
		// Bound the work a hostile or broken file can cause: 1 GiB, 64
		// passes, a 1 KiB output.
		if err1 != nil || err2 != nil || len(want) < 4 || len(want) > 1024 || m > 1<<20 || t > 64 {
			return false, errMalformedHash
		}
		var got []byte
		if variant == "argon2id" {
			got = argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
		} else {
			got = argon2.Key([]byte(password), salt, t, m, p, uint32(len(want)))
		}
		return subtle.ConstantTimeCompare(got, want) == 1, nil
	}
}

func generateArgon2(variant string, m, t uint32) func(string) (string, error) {
	return func(password string) (string, error) {
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return "", err
		}
		var key []byte
		if variant == "argon2id" {
			key = argon2.IDKey([]byte(password), salt, t, m, 1, 32)
		} else {
			key = argon2.Key([]byte(password), salt, t, m, 1, 32)
		}
		return fmt.Sprintf("$%s$v=19$m=%d,t=%d,p=1$%s$%s", variant, m, t,
			base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
	}
}

// verifySalted checks {SSHA*}: base64(digest(password+salt) + salt).
func verifySalted(newHash func() hash.Hash) verifier {
	return verifySaltedEnc(newHash, base64.StdEncoding.DecodeString)
}

func verifySaltedEnc(newHash func() hash.Hash, decode func(string) ([]byte, error)) verifier {
	size := newHash().Size()
	return func(encoded, password string) (bool, error) {
		raw, err := decode(encoded)
		if err != nil || len(raw) <= size {
			return false, errMalformedHash
		}
		h := newHash()
		h.Write([]byte(password))
		h.Write(raw[size:])
		return hmac.Equal(h.Sum(nil), raw[:size]), nil
	}
}

func generateSalted(newHash func() hash.Hash) func(string) (string, error) {
	return func(password string) (string, error) {
		salt := make([]byte, 8)
		if _, err := rand.Read(salt); err != nil {
			return "", err
		}
		h := newHash()
		h.Write([]byte(password))
		h.Write(salt)
		return base64.StdEncoding.EncodeToString(append(h.Sum(nil), salt...)), nil
	}
}

// verifyDigest checks the unsalted {SHA*} schemes: base64(digest(password)).
func verifyDigest(newHash func() hash.Hash) verifier {
	return verifyDigestEnc(newHash, base64.StdEncoding.DecodeString)
}

func verifyDigestEnc(newHash func() hash.Hash, decode func(string) ([]byte, error)) verifier {
	size := newHash().Size()
	return func(encoded, password string) (bool, error) {
		raw, err := decode(encoded)
		if err != nil || len(raw) != size {
			return false, errMalformedHash
		}
		h := newHash()
		h.Write([]byte(password))
		return hmac.Equal(h.Sum(nil), raw), nil
	}
}

// verifyPBKDF2 checks Dovecot's PBKDF2 scheme: $1$<salt>$<rounds>$<hex>,
// PBKDF2-HMAC-SHA1 over the salt text, 20 bytes of output.
func verifyPBKDF2(encoded, password string) (bool, error) {
	f := strings.Split(encoded, "$")
	if len(f) != 5 || f[0] != "" || f[1] != "1" {
		return false, errMalformedHash
	}
	rounds, err := strconv.Atoi(f[3])
	want, herr := hex.DecodeString(f[4])
	if err != nil || herr != nil || rounds < 1 || rounds > maxPBKDF2Rounds || len(want) == 0 || len(want) > 64 {
		return false, errMalformedHash
	}
	got, err := pbkdf2.Key(sha1.New, password, []byte(f[2]), rounds, len(want))
	if err != nil {
		return false, errMalformedHash
	}
	return hmac.Equal(got, want), nil
}

func generatePBKDF2(password string) (string, error) {
	salt, err := randomSalt(16)
	if err != nil {
		return "", err
	}
	const rounds = 5000
	key, err := pbkdf2.Key(sha1.New, password, []byte(salt), rounds, sha1.Size)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("$1$%s$%d$%s", salt, rounds, hex.EncodeToString(key)), nil
}
