package ldapauth

import (
	"testing"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/roost-mail/roost/auth"
)

// shape is a filter's structure without its values.
func shape(p *ber.Packet) string {
	s := string(rune('A' + p.Tag))
	if p.Tag <= 2 || p.Tag == 7 { // and, or, not, present: recurse
		s += "("
		for _, c := range p.Children {
			s += shape(c)
		}
		s += ")"
	}
	return s
}

// FuzzInjection checks that no login name changes the structure of the
// user filter or of the templated DN: a name is always one value.
func FuzzInjection(f *testing.F) {
	f.Add("alice")
	f.Add(")(uid=*")
	f.Fuzz(func(t *testing.T, login string) {
		u := auth.Normalize(login)
		if !usable(u) {
			return
		}
		const tmpl = "(&(objectClass=inetOrgPerson)(|(uid=%u)(mail=%n@%d)))"
		want, err := ldap.CompileFilter(expand(tmpl, "x@y", ldap.EscapeFilter))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ldap.CompileFilter(expand(tmpl, u, ldap.EscapeFilter))
		if err != nil {
			t.Fatalf("login %q breaks the filter: %v", login, err)
		}
		if shape(got) != shape(want) {
			t.Fatalf("login %q changes the filter's structure", login)
		}
		dn, err := ldap.ParseDN(expand("uid=%u,ou=people,dc=example,dc=edu", u, ldap.EscapeDN))
		if err != nil {
			return // an unparseable DN names no entry
		}
		if len(dn.RDNs) != 4 || len(dn.RDNs[0].Attributes) != 1 || dn.RDNs[0].Attributes[0].Value != u {
			t.Fatalf("login %q changes the DN: %v", login, dn)
		}
	})
}
