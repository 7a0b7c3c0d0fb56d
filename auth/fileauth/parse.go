package fileauth

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/roost-mail/roost/auth"
)

// entry is one user of the passwd-file.
type entry struct {
	user   string // normalised
	scheme string // upper case; "" = no password (the user cannot log in)
	hash   string // what followed {SCHEME}; never logged
	uid    int    // -1 if unset
	gid    int
	home   string
	// maildir is the Maildir root from userdb_mail, or "".
	maildir       string
	quotaBytes    int64 // -1 if unset
	quotaMessages int64
	// noLogin is why the user cannot log in although Lookup finds them
	// (nologin, or a passdb field Roost cannot enforce), or "".
	noLogin string
	line    int
}

// parseLine parses one line of Dovecot's passwd-file format:
//
//	user:password:uid:gid:gecos:home:shell:extra_fields
//
// Trailing fields may be left out; extra_fields are space-separated
// key=value pairs (userdb_home, userdb_mail, userdb_uid, userdb_gid,
// userdb_quota_rule; nologin; others are ignored). It returns nil, nil for
// blank lines and comments. A line that cannot name a usable user is an
// error; a problem confined to one extra field is a warning, and the field
// is ignored, so a typo in a quota rule does not bounce the user's mail.
// Messages never contain the password field.
func parseLine(line string) (e *entry, warnings []string, err error) {
	line = strings.TrimSuffix(line, "\r")
	if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimLeft(line, " \t"), "#") {
		return nil, nil, nil
	}
	if !strings.Contains(line, ":") {
		return nil, nil, errors.New("no password field: expected user:password[:uid:gid:gecos:home:shell:extra_fields]")
	}
	f := strings.SplitN(line, ":", 8)
	for len(f) < 8 {
		f = append(f, "")
	}
	e = &entry{user: auth.Normalize(f[0]), uid: -1, gid: -1, quotaBytes: -1, quotaMessages: -1}
	if err := auth.ValidUsername(e.user); err != nil {
		return nil, nil, fmt.Errorf("bad user name: %w", err)
	}
	if p := f[1]; p != "" {
		e.scheme, e.hash = "CRYPT", p // Dovecot's default scheme for passwd-files
		if strings.HasPrefix(p, "{") {
			s, h, ok := strings.Cut(p[1:], "}")
			if !ok || s == "" {
				return nil, nil, errors.New("password field starts with '{' but has no {SCHEME} prefix")
			}
			e.scheme, e.hash = strings.ToUpper(s), h
		}
		if _, ok := lookupScheme(e.scheme); !ok {
			warnings = append(warnings, fmt.Sprintf("password scheme {%s} is not supported: the user cannot log in", e.scheme))
		}
	}
	if e.uid, err = parseID(f[2], "uid"); err != nil {
		return nil, nil, err
	}
	if e.gid, err = parseID(f[3], "gid"); err != nil {
		return nil, nil, err
	}
	e.home = f[5]
	var mail string
	for _, field := range strings.Fields(f[7]) {
		key, value, _ := strings.Cut(field, "=")
		switch strings.ToLower(key) {
		case "userdb_home":
			e.home = value
		case "userdb_mail":
			mail = value
		case "userdb_uid":
			if e.uid, err = parseID(value, "userdb_uid"); err != nil {
				return nil, nil, err
			}
		case "userdb_gid":
			if e.gid, err = parseID(value, "userdb_gid"); err != nil {
				return nil, nil, err
			}
		case "userdb_quota_rule", "quota_rule":
			if w := e.quotaRule(value); w != "" {
				warnings = append(warnings, w)
			}
		case "nologin":
			e.noLogin = "nologin is set"
		case "allow_nets", "allow_real_nets", "nopassword", "skip", "master", "proxy", "proxy_maybe", "host":
			// Fields that would change who may log in: refuse rather than
			// ignore them and let in someone the admin meant to keep out.
			e.noLogin = "passdb field " + key + " is not supported by Roost"
			warnings = append(warnings, e.noLogin+": the user cannot log in")
		}
	}
	if e.home != "" {
		e.home = expand(e.home, e.user, "")
		if !filepath.IsAbs(e.home) {
			warnings = append(warnings, fmt.Sprintf("home %q is not an absolute path: ignored", e.home))
			e.home = ""
		}
	}
	if mail != "" {
		if w := e.mailLocation(mail); w != "" {
			warnings = append(warnings, w)
		}
	}
	return e, warnings, nil
}

func parseID(s, what string) (int, error) {
	if s == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1<<31-1 {
		return 0, fmt.Errorf("%s %q is not a number", what, s)
	}
	return n, nil
}

// quotaRule applies a Dovecot quota rule "*:storage=250M[:messages=N]";
// rules for single mailboxes ("Trash:storage=+100M") are not supported and
// are ignored. storage= counts kilobytes unless a unit follows, bytes=
// counts bytes (Dovecot's rules). It returns a warning, or "".
func (e *entry) quotaRule(rule string) string {
	root, limits, ok := strings.Cut(rule, ":")
	if !ok || root != "*" {
		return fmt.Sprintf("quota rule %q: only rules for \"*\" are supported: ignored", rule)
	}
	bytes, messages := e.quotaBytes, e.quotaMessages
	for _, l := range strings.Split(limits, ":") {
		key, value, _ := strings.Cut(l, "=")
		var err error
		switch strings.ToLower(key) {
		case "storage":
			bytes, err = auth.ParseSize(value, 1024)
		case "bytes":
			bytes, err = auth.ParseSize(value, 1)
		case "messages":
			messages, err = auth.ParseSize(value, 1)
		case "ignore", "noenforcing", "backend":
			continue
		default:
			err = fmt.Errorf("unknown limit %q", key)
		}
		if err != nil {
			return fmt.Sprintf("quota rule %q: %v (relative and %% limits are not supported): ignored", rule, err)
		}
	}
	e.quotaBytes, e.quotaMessages = bytes, messages
	return ""
}

// mailLocation reads userdb_mail, e.g. "maildir:~/Maildir" or
// "maildir:/var/vmail/%d/%n:INDEX=/x"; only the Maildir path is used.
func (e *entry) mailLocation(loc string) string {
	driver, rest, ok := strings.Cut(loc, ":")
	if !ok || strings.ToLower(driver) != "maildir" {
		return fmt.Sprintf("userdb_mail %q: only maildir: locations are supported: ignored", loc)
	}
	path, _, _ := strings.Cut(rest, ":")
	path = expand(path, e.user, e.home)
	if t, ok := strings.CutPrefix(path, "~/"); ok || path == "~" {
		if e.home == "" {
			return fmt.Sprintf("userdb_mail %q is relative to a home the user does not have: ignored", loc)
		}
		path = filepath.Join(e.home, t)
	}
	if !filepath.IsAbs(path) {
		return fmt.Sprintf("userdb_mail %q is not an absolute path: ignored", loc)
	}
	e.maildir = filepath.Clean(path)
	return ""
}

// expand replaces Dovecot's variables in s: %u or %{user} (user), %n or
// %{username} (local part), %d or %{domain} (domain), %h or %{home} (home)
// and %%, with the case modifiers %L and %U (%Ld, %Un); names are already
// lower case, so %L changes nothing. Other variables are left as written.
func expand(s, user, home string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	local, domain, _ := strings.Cut(user, "@")
	values := map[string]string{"u": user, "user": user, "n": local, "username": local,
		"d": domain, "domain": domain, "h": home, "home": home}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		j := i + 1
		upper := false
		if s[j] == 'L' || s[j] == 'U' {
			upper = s[j] == 'U'
			j++
		}
		name := ""
		switch {
		case j < len(s) && s[j] == '{':
			if end := strings.IndexByte(s[j:], '}'); end > 0 {
				name = s[j+1 : j+end]
				j += end
			}
		case j < len(s):
			name = s[j : j+1]
		}
		if v, ok := values[name]; ok {
			if upper {
				v = strings.ToUpper(v)
			}
			b.WriteString(v)
			i = j
			continue
		}
		if name == "%" && j == i+1 {
			b.WriteByte('%')
			i = j
			continue
		}
		b.WriteByte('%') // unknown: keep as written
	}
	return b.String()
}
