package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/roost-mail/roost/cmd/internal/config"
)

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Check the configuration"}
	check := &cobra.Command{
		Use:   "check",
		Short: "Load the configuration as the daemons do and report every problem",
		Long: `Load the configuration file as imapd, pop3d and lmtpd do, check the files
and directories it names (mail root, passwd-file, TLS certificate, warning
template, LMTP socket directory) and open the auth backend and the store.
Every problem is listed at once; the exit status is 1 if there is any.`,
		Args: cobra.NoArgs,
		RunE: action(func(cmd *cobra.Command, args []string) error {
			problems := a.checkConfig(cmd)
			if len(problems) == 0 {
				fmt.Fprintf(a.stdout, "config %s: OK\n", a.configPath)
				return nil
			}
			fmt.Fprintf(a.stdout, "config %s: %d problem(s)\n", a.configPath, len(problems))
			for _, p := range problems {
				fmt.Fprintf(a.stdout, "  - %s\n", p)
			}
			return errReported
		}),
	}
	cmd.AddCommand(check)
	return cmd
}

func (a *app) checkConfig(cmd *cobra.Command) []string {
	cfg, err := config.Load(a.configPath)
	if err != nil {
		// config.Load names the file once, in front of the joined problems.
		msg := strings.TrimPrefix(err.Error(), "config "+a.configPath+": ")
		return strings.Split(msg, "\n")
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if fi, err := os.Stat(cfg.Mail.Root); err != nil {
		bad("mail.root: %v", err)
	} else if !fi.IsDir() {
		bad("mail.root: %s is not a directory", cfg.Mail.Root)
	}
	switch cfg.Auth.Backend {
	case "file":
		if f, err := os.Open(cfg.Auth.File.Path); err != nil {
			bad("auth.file.path: %v", err)
		} else {
			f.Close()
		}
	case "ldap":
		if p := cfg.Auth.LDAP.BindPasswordFile; p != "" {
			if _, err := os.ReadFile(p); err != nil {
				bad("auth.ldap.bind_password_file: %v", err)
			}
		}
	}
	if cfg.TLS.CertFile != "" || cfg.TLS.KeyFile != "" {
		if _, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			bad("tls.cert_file/tls.key_file: %v", err)
		}
	}
	if _, err := quotaPolicy(cfg, nil); err != nil {
		bad("%v", err)
	}
	for _, l := range cfg.LMTP.Listen {
		if network, addr, _ := config.SplitListen(l); network == "unix" {
			if _, err := os.Stat(filepath.Dir(addr)); err != nil {
				bad("lmtp.listen %s: socket directory: %v", l, err)
			}
		}
	}
	if len(problems) > 0 {
		return problems
	}
	// Build what the daemons build (auth backend connection, store).
	if err := a.open(cmd.Context(), io.Discard); err != nil {
		bad("%v", err)
	}
	return problems
}
