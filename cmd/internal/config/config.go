// Package config reads Roost's one YAML configuration file, shared by every
// binary, with environment overrides (ROOST_<SECTION>_<KEY>, e.g.
// ROOST_MAIL_ROOT). Key names are a contract (docs/configuration.md): keep
// them, add to them. Unknown keys are an error, so a typo is caught at
// start-up rather than silently ignored.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Size is a byte count written with Dovecot's units: K, M, G, T are powers
// of 1024 and an optional trailing "B" means the same ("250M" = "250MB" =
// 262144000).
type Size int64

// ParseSize parses a Size.
func ParseSize(s string) (Size, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "B")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q: use a number with an optional unit K, M, G or T (e.g. 250M)", s)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(n * mult), nil
}

// Config is the whole configuration file.
type Config struct {
	Mail     Mail     `mapstructure:"mail"`
	Quota    Quota    `mapstructure:"quota"`
	Auth     Auth     `mapstructure:"auth"`
	IMAP     IMAP     `mapstructure:"imap"`
	POP3     POP3     `mapstructure:"pop3"`
	LMTP     LMTP     `mapstructure:"lmtp"`
	TLS      TLS      `mapstructure:"tls"`
	Security Security `mapstructure:"security"`
	Log      Log      `mapstructure:"log"`
	Metrics  Metrics  `mapstructure:"metrics"`
}

// Mail says where Maildirs live and how they are laid out.
type Mail struct {
	// Root holds virtual users' Maildirs: <root>/<user>/Maildir, or
	// <root>/<domain>/<local>/Maildir for user@domain, unless auth gives a
	// home or Maildir path.
	Root string `mapstructure:"root"`
	// Layout is "virtual" (one vmail uid) or "system" (files keep the
	// Maildir owner's uid/gid; the daemons must run as root).
	Layout string `mapstructure:"layout"`
	// SpecialUse maps folder names to special-use attributes; these
	// folders are created on first login.
	SpecialUse map[string]string `mapstructure:"special_use"`
	// Fsync makes every write durable before it is acknowledged.
	Fsync bool `mapstructure:"fsync"`
}

// Quota is the quota policy.
type Quota struct {
	Default      Size `mapstructure:"default"`
	GracePercent int  `mapstructure:"grace_percent"`
	// Warnings are usage percentages that trigger one warning mail each.
	Warnings []int `mapstructure:"warnings"`
	// WarningTemplate is a text/template file for warning mails; "" uses
	// the built-in text.
	WarningTemplate string `mapstructure:"warning_template"`
	// IncludeTrash counts Trash in usage (as Dovecot does by default).
	IncludeTrash bool `mapstructure:"include_trash"`
	// Permanent makes over-quota deliveries fail with 552 5.2.2 (bounce)
	// instead of 452 4.2.2 (Postfix queues and retries).
	Permanent bool `mapstructure:"permanent"`
}

// Auth selects and configures the authentication backend.
type Auth struct {
	Backend string   `mapstructure:"backend"` // file | ldap
	File    FileAuth `mapstructure:"file"`
	LDAP    LDAPAuth `mapstructure:"ldap"`
	Cache   Cache    `mapstructure:"cache"`
}

// FileAuth configures the passwd-file backend.
type FileAuth struct {
	Path string `mapstructure:"path"`
}

// LDAPAuth configures the LDAP backend.
type LDAPAuth struct {
	URLs             []string      `mapstructure:"urls"`
	StartTLS         bool          `mapstructure:"start_tls"`
	CAFile           string        `mapstructure:"ca_file"`
	BindDN           string        `mapstructure:"bind_dn"`
	BindPasswordFile string        `mapstructure:"bind_password_file"`
	BaseDN           string        `mapstructure:"base_dn"`
	UserFilter       string        `mapstructure:"user_filter"`
	UserDNTemplate   string        `mapstructure:"user_dn_template"`
	Attributes       LDAPAttrs     `mapstructure:"attributes"`
	Timeout          time.Duration `mapstructure:"timeout"`
	PoolSize         int           `mapstructure:"pool_size"`
}

// LDAPAttrs names the LDAP attributes Roost reads.
type LDAPAttrs struct {
	User    string `mapstructure:"user"`
	Home    string `mapstructure:"home"`
	Maildir string `mapstructure:"maildir"`
	Quota   string `mapstructure:"quota"`
	UID     string `mapstructure:"uid_number"`
	GID     string `mapstructure:"gid_number"`
}

// Cache configures the optional authentication cache (0 TTL = off).
type Cache struct {
	TTL         time.Duration `mapstructure:"ttl"`
	NegativeTTL time.Duration `mapstructure:"negative_ttl"`
}

// IMAP configures imapd.
type IMAP struct {
	Listen          []string      `mapstructure:"listen"`
	ListenTLS       []string      `mapstructure:"listen_tls"`
	Delimiter       string        `mapstructure:"delimiter"`
	NamespacePrefix string        `mapstructure:"namespace_prefix"`
	AppendLimit     Size          `mapstructure:"append_limit"`
	IdleTimeout     time.Duration `mapstructure:"idle_timeout"`
	// MaxUserIPConnections limits connections per user and IP (Dovecot's
	// mail_max_userip_connections).
	MaxUserIPConnections int `mapstructure:"max_user_ip_connections"`
	// MaxMailboxes limits the folders a user may have, not counting INBOX
	// and mail.special_use; CREATE beyond it answers NO [LIMIT]. 0 = no
	// limit.
	MaxMailboxes int `mapstructure:"max_mailboxes"`
}

// POP3 configures pop3d.
type POP3 struct {
	Listen    []string `mapstructure:"listen"`
	ListenTLS []string `mapstructure:"listen_tls"`
	// UIDLFormat is Dovecot's pop3_uidl_format syntax; the default
	// "%08Xu%08Xv" gives Dovecot's UIDLs.
	UIDLFormat string `mapstructure:"uidl_format"`
	// ExpireDays advertises and enforces EXPIRE (0 = off).
	ExpireDays int `mapstructure:"expire_days"`
	// LoginDelay advertises and enforces LOGIN-DELAY (0 = off).
	LoginDelay time.Duration `mapstructure:"login_delay"`
	// MarkSeen sets \Seen on RETR.
	MarkSeen    bool          `mapstructure:"mark_seen"`
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
}

// LMTP configures lmtpd.
type LMTP struct {
	Listen []string `mapstructure:"listen"`
	// RecipientDelimiter separates a +detail in local parts ("" = off).
	RecipientDelimiter string `mapstructure:"recipient_delimiter"`
	// DetailFolders delivers user+detail to folder "detail" when it exists.
	DetailFolders bool `mapstructure:"detail_folders"`
	// Hostname is announced in the greeting.
	Hostname string `mapstructure:"hostname"`
	// LocalDomains are looked up by local part only: Postfix's
	// mailbox_transport sends local users as user@$myhostname.
	LocalDomains []string `mapstructure:"local_domains"`
}

// TLS is the certificate every daemon serves; it is re-read on SIGHUP.
type TLS struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// Security holds the limits that protect the server.
type Security struct {
	AllowPlaintextAuth bool     `mapstructure:"allow_plaintext_auth"`
	TrustedNetworks    []string `mapstructure:"trusted_networks"`
	// ProxyProtocolFrom lists networks allowed to send a PROXY header.
	ProxyProtocolFrom []string `mapstructure:"proxy_protocol_from"`
	MaxConnections    int      `mapstructure:"max_connections"`
	// MaxIPConnections limits connections from one address (0 = off).
	MaxIPConnections int           `mapstructure:"max_ip_connections"`
	AuthPenaltyMax   time.Duration `mapstructure:"auth_penalty_max"`
	// AllowRoot lets imapd, pop3d and lmtpd serve as root with the virtual
	// layout (containers, test harnesses); otherwise they refuse, because
	// files they create would belong to root instead of the mail user.
	AllowRoot bool `mapstructure:"allow_root"`
}

// Log configures log/slog output.
type Log struct {
	Level  string `mapstructure:"level"`  // debug | info | warn | error
	Format string `mapstructure:"format"` // text | json
}

// Metrics configures Prometheus endpoints, one address per daemon.
type Metrics struct {
	Listen map[string]string `mapstructure:"listen"` // imapd, pop3d, lmtpd -> host:port
}

// defaults are the value of every key; they also declare every key, which
// makes environment overrides work for all of them.
func defaults() map[string]any {
	return map[string]any{
		"mail.root":   "/var/vmail",
		"mail.layout": "virtual",
		"mail.special_use": map[string]string{
			"Sent": `\Sent`, "Drafts": `\Drafts`, "Trash": `\Trash`,
			"Junk": `\Junk`, "Archive": `\Archive`,
		},
		"mail.fsync":                      true,
		"quota.default":                   "250M",
		"quota.grace_percent":             0,
		"quota.warnings":                  []int{80, 90, 100},
		"quota.warning_template":          "",
		"quota.include_trash":             true,
		"quota.permanent":                 false,
		"auth.backend":                    "file",
		"auth.file.path":                  "/etc/roost/users",
		"auth.ldap.urls":                  []string{"ldap://127.0.0.1"},
		"auth.ldap.start_tls":             false,
		"auth.ldap.ca_file":               "",
		"auth.ldap.bind_dn":               "",
		"auth.ldap.bind_password_file":    "",
		"auth.ldap.base_dn":               "",
		"auth.ldap.user_filter":           "(&(objectClass=inetOrgPerson)(uid=%u))",
		"auth.ldap.user_dn_template":      "",
		"auth.ldap.attributes.user":       "uid",
		"auth.ldap.attributes.home":       "",
		"auth.ldap.attributes.maildir":    "",
		"auth.ldap.attributes.quota":      "",
		"auth.ldap.attributes.uid_number": "",
		"auth.ldap.attributes.gid_number": "",
		"auth.ldap.timeout":               "5s",
		"auth.ldap.pool_size":             4,
		"auth.cache.ttl":                  "0s",
		"auth.cache.negative_ttl":         "0s",
		"imap.listen":                     []string{"127.0.0.1:143"},
		"imap.listen_tls":                 []string{},
		"imap.delimiter":                  "/",
		"imap.namespace_prefix":           "",
		"imap.append_limit":               "50M",
		"imap.idle_timeout":               "30m",
		"imap.max_user_ip_connections":    10,
		"imap.max_mailboxes":              1000,
		"pop3.listen":                     []string{"127.0.0.1:110"},
		"pop3.listen_tls":                 []string{},
		"pop3.uidl_format":                "%08Xu%08Xv",
		"pop3.expire_days":                0,
		"pop3.login_delay":                "0s",
		"pop3.mark_seen":                  true,
		"pop3.idle_timeout":               "10m",
		"lmtp.listen":                     []string{"unix:/var/spool/postfix/roost/lmtp"},
		"lmtp.recipient_delimiter":        "+",
		"lmtp.detail_folders":             true,
		"lmtp.hostname":                   "",
		"lmtp.local_domains":              []string{},
		"tls.cert_file":                   "",
		"tls.key_file":                    "",
		"security.allow_plaintext_auth":   false,
		"security.trusted_networks":       []string{},
		"security.proxy_protocol_from":    []string{},
		"security.max_connections":        5000,
		"security.max_ip_connections":     0,
		"security.auth_penalty_max":       "15s",
		"security.allow_root":             false,
		"log.level":                       "info",
		"log.format":                      "text",
		"metrics.listen":                  map[string]string{},
	}
}

// Load reads the file at path (or only defaults and environment when path
// is "") and validates the result. Every problem found is reported at once.
func Load(path string) (*Config, error) {
	v := viper.New()
	for k, val := range defaults() {
		v.SetDefault(k, val)
	}
	v.SetEnvPrefix("ROOST")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("read config %s: %w", path, err)
		}
	}
	var c Config
	hook := mapstructure.ComposeDecodeHookFunc(
		sizeHook,
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)
	if err := v.UnmarshalExact(&c, viper.DecodeHook(hook)); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if path != "" {
		// viper lower-cases every map key; folder names are case-sensitive.
		if err := keepFolderCase(path, &c); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// keepFolderCase re-reads mail.special_use from the file itself, because
// viper folds map keys to lower case ("Sent" would become folder "sent").
func keepFolderCase(path string, c *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var raw struct {
		Mail struct {
			SpecialUse map[string]string `yaml:"special_use"`
		} `yaml:"mail"`
	}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return err
	}
	if raw.Mail.SpecialUse != nil {
		c.Mail.SpecialUse = raw.Mail.SpecialUse
	}
	return nil
}

func sizeHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(Size(0)) {
		return data, nil
	}
	switch d := data.(type) {
	case string:
		return ParseSize(d)
	case int:
		return Size(d), nil
	case int64:
		return Size(d), nil
	case float64:
		return Size(int64(d)), nil
	}
	return data, nil
}

// Validate reports every problem in c, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Mail.Root == "" {
		bad("mail.root is empty: set it to the directory holding users' Maildirs")
	}
	if c.Mail.Layout != "virtual" && c.Mail.Layout != "system" {
		bad("mail.layout %q: use virtual or system", c.Mail.Layout)
	}
	if c.Quota.Default < 0 || c.Quota.GracePercent < 0 {
		bad("quota.default and quota.grace_percent must not be negative")
	}
	for _, w := range c.Quota.Warnings {
		if w <= 0 || w > 1000 {
			bad("quota.warnings: %d is not a percentage", w)
		}
	}
	switch c.Auth.Backend {
	case "file":
		if c.Auth.File.Path == "" {
			bad("auth.file.path is empty: point it at the passwd-file")
		}
	case "ldap":
		if len(c.Auth.LDAP.URLs) == 0 {
			bad("auth.ldap.urls is empty: list at least one ldap:// or ldaps:// URL")
		}
		if c.Auth.LDAP.UserDNTemplate == "" && c.Auth.LDAP.BaseDN == "" {
			bad("auth.ldap: set user_dn_template, or base_dn and user_filter to search for users")
		}
	default:
		bad("auth.backend %q: use file or ldap", c.Auth.Backend)
	}
	if d := c.IMAP.Delimiter; len(d) != 1 || d == `"` || d == `\` {
		bad("imap.delimiter %q: use one character such as / or .", d)
	}
	if c.IMAP.MaxMailboxes < 0 {
		bad("imap.max_mailboxes %d: use 0 for no limit, or the number of folders a user may have", c.IMAP.MaxMailboxes)
	}
	for key, list := range map[string][]string{
		"imap.listen": c.IMAP.Listen, "imap.listen_tls": c.IMAP.ListenTLS,
		"pop3.listen": c.POP3.Listen, "pop3.listen_tls": c.POP3.ListenTLS,
		"lmtp.listen": c.LMTP.Listen,
	} {
		for _, addr := range list {
			if _, _, err := SplitListen(addr); err != nil {
				bad("%s: %w", key, err)
			}
		}
	}
	if len(c.IMAP.ListenTLS)+len(c.POP3.ListenTLS) > 0 && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		bad("implicit TLS listeners need tls.cert_file and tls.key_file")
	}
	for _, key := range []struct {
		name string
		nets []string
	}{{"security.trusted_networks", c.Security.TrustedNetworks}, {"security.proxy_protocol_from", c.Security.ProxyProtocolFrom}} {
		for _, n := range key.nets {
			if _, _, err := net.ParseCIDR(n); err != nil && net.ParseIP(n) == nil {
				bad("%s: %q is not an address or CIDR network", key.name, n)
			}
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level %q: use debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format %q: use text or json", c.Log.Format)
	}
	for name, addr := range c.Metrics.Listen {
		switch name {
		case "imapd", "pop3d", "lmtpd":
		default:
			bad("metrics.listen: unknown daemon %q (use imapd, pop3d or lmtpd)", name)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("metrics.listen.%s: %q is not host:port", name, addr)
		}
	}
	return errors.Join(errs...)
}

// SplitListen splits a listen entry into a network ("tcp" or "unix") and
// an address: "host:port" or "unix:/path".
func SplitListen(addr string) (network, address string, err error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("%q: a unix socket needs an absolute path", addr)
		}
		return "unix", p, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("%q is neither host:port nor unix:/path", addr)
	}
	return "tcp", addr, nil
}
