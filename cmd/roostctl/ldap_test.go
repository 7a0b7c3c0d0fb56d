package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mail/roost/internal/testenv"
)

// startLDAP starts a private slapd whose users carry their quota in an
// LDAP attribute (mailQuota, from a small test schema), as campuses keep it.
func startLDAP(t *testing.T) *testenv.Slapd {
	t.Helper()
	return testenv.StartSlapd(t, testenv.SlapdOptions{
		Schema: []string{
			"attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'mailQuota' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )",
			"objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'roostMailUser' SUP top AUXILIARY MAY ( mailQuota ) )",
		},
		ACL: []string{
			"access to attrs=userPassword by self write by anonymous auth by * none",
			"access to * by users read by * none",
		},
		LDIF: `dn: ou=people,dc=example,dc=edu
objectClass: organizationalUnit
ou: people

dn: cn=roost,dc=example,dc=edu
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: roost
userPassword: service-secret

dn: uid=alice,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
objectClass: roostMailUser
uid: alice
cn: Alice
sn: Liddell
userPassword: alice-pw
mailQuota: 100M

dn: uid=bob,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Builder
userPassword: bob-pw
`,
	})
}

// TestLDAPLimits: limits come from the LDAP attribute, else quota.default;
// with the directory down, roostctl says so and deliver asks Postfix to
// retry.
func TestLDAPLimits(t *testing.T) {
	ldap := startLDAP(t)
	s := newSite(t, "")
	secret := filepath.Join(s.dir, "ldap.secret")
	if err := os.WriteFile(secret, []byte("service-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.edit("  backend: file\n", fmt.Sprintf(`  backend: ldap
  ldap:
    urls: [%q]
    bind_dn: cn=roost,dc=example,dc=edu
    bind_password_file: %s
    base_dn: ou=people,dc=example,dc=edu
    timeout: 2s
    attributes:
      quota: mailQuota
`, ldap.URL, secret))
	s.fill("alice", 100<<20, "INBOX", 5000)

	var alice, bob quotaJSON
	if err := json.Unmarshal([]byte(s.ok("", "quota", "get", "alice", "--json")), &alice); err != nil {
		t.Fatal(err)
	}
	if alice.LimitBytes != 100<<20 || alice.UsedBytes != 5000 {
		t.Errorf("alice: limit %d used %d; want 100M from mailQuota and 5000", alice.LimitBytes, alice.UsedBytes)
	}
	if err := json.Unmarshal([]byte(s.ok("", "quota", "get", "bob", "--json")), &bob); err != nil {
		t.Fatal(err)
	}
	if bob.LimitBytes != 1<<20 {
		t.Errorf("bob without mailQuota: limit %d, want quota.default 1M", bob.LimitBytes)
	}
	if out := s.ok("", "user", "lookup", "alice"); !strings.Contains(out, "backend:  ldap") || !strings.Contains(out, "100.0 MB") {
		t.Errorf("user lookup alice:\n%s", out)
	}
	if out := s.ok("alice-pw\n", "auth", "test", "alice"); !strings.Contains(out, "OK") {
		t.Errorf("auth test alice: %s", out)
	}
	if out := s.ok("", "quota", "report"); !strings.Contains(out, "alice") || !strings.Contains(out, "bob") {
		t.Errorf("quota report lists the directory's users:\n%s", out)
	}

	ldap.Stop()
	if r := s.run("", "user", "lookup", "alice"); r.code != 1 || !strings.Contains(r.stderr, "reachable") {
		t.Errorf("LDAP down, user lookup: exit %d %q", r.code, r.stderr)
	}
	if r := s.run("alice-pw\n", "auth", "test", "alice"); r.code != 1 || !strings.Contains(r.stdout, "could not check") {
		t.Errorf("LDAP down, auth test: exit %d %q", r.code, r.stdout)
	}
	if r := s.run("Subject: x\n\nbody\n", "deliver", "-u", "alice"); r.code != exTempFail {
		t.Errorf("LDAP down, deliver: exit %d, want %d (Postfix retries)\n%s", r.code, exTempFail, r.stderr)
	}
}
