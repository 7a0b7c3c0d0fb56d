package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/internal/testenv"
)

// startSlapd runs a private slapd with alice and the service account and
// returns its URL. Only the service account may search.
func startSlapd(t *testing.T) string {
	t.Helper()
	return testenv.StartSlapd(t, testenv.SlapdOptions{
		ACL: []string{
			"access to attrs=userPassword by anonymous auth by * none",
			`access to * by dn.exact="cn=roost,dc=example,dc=edu" read by anonymous auth by * none`,
		},
		LDIF: `dn: cn=roost,dc=example,dc=edu
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: roost
userPassword: service-secret

dn: uid=alice,dc=example,dc=edu
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Liddell
userPassword: alice-pw
`,
	}).URL
}

// The service password comes from bind_password_file, one line with its
// newline: the right file lets alice in, a wrong one is "could not check".
func TestOpenLDAPBindPasswordFile(t *testing.T) {
	url := startSlapd(t)
	for _, tc := range []struct {
		secret string
		mode   os.FileMode
		want   error
	}{
		{"service-secret\n", 0o640, nil},
		{"service-secret\r\n", 0o644, nil},
		{"wrong\n", 0o600, auth.ErrUnavailable},
	} {
		secret := filepath.Join(t.TempDir(), "ldap.secret")
		os.WriteFile(secret, []byte(tc.secret), 0o600)
		os.Chmod(secret, tc.mode)
		path, root := writeConfig(t, "  backend: ldap\n  ldap:\n    urls: ["+url+"]\n"+
			"    base_dn: dc=example,dc=edu\n    bind_dn: cn=roost,dc=example,dc=edu\n"+
			"    bind_password_file: "+secret+"\n    timeout: 5s\n", "")
		var logs syncBuf
		e, err := Open(context.Background(), path, "imapd", &logs)
		if err != nil {
			t.Fatal(err)
		}
		if warned := strings.Contains(logs.String(), "readable by every user"); warned != (tc.mode&0o004 != 0) {
			t.Errorf("mode %v: warned %v", tc.mode, warned)
		}
		id, err := e.Auth.Authenticate(context.Background(), "alice", "alice-pw")
		if !errors.Is(err, tc.want) {
			t.Errorf("secret %q: Authenticate = %v, want %v", tc.secret, err, tc.want)
		}
		if err == nil && id.Maildir != filepath.Join(root, "alice", "Maildir") {
			t.Errorf("alice's Maildir %q: site defaults not applied", id.Maildir)
		}
		if err == nil {
			if _, err := e.Auth.Authenticate(context.Background(), "alice", "nope"); !errors.Is(err, auth.ErrInvalidCredentials) {
				t.Errorf("wrong user password: %v", err)
			}
		}
		if err != nil && strings.Contains(err.Error(), "service-secret") {
			t.Errorf("error reveals the service password: %v", err)
		}
		e.Close()
	}
}
