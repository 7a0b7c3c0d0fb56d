package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/cmd/internal/config"
	"github.com/roost-mail/roost/cmd/internal/daemon"
	"github.com/roost-mail/roost/quota"
)

// app is what every command shares: the global flags and, once a command
// needs them, the config, auth backend and store built as the daemons
// build them (cmd/internal/daemon).
type app struct {
	configPath string
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer

	env    *daemon.Env
	policy *quota.Policy
}

func newRoot(stdout, stderr io.Writer, stdin io.Reader) *cobra.Command {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "roostctl",
		Short: "Roost admin tool: quotas, users, logins, passwords, mailboxes, delivery",
		Long: `roostctl inspects and maintains a Roost mail host. It reads the same
configuration file as the daemons. Tables are for people; --json (and
--csv where offered) are for scripts. Exit status: 0 success, 1 failure,
2 usage error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPostRunE: func(*cobra.Command, []string) error {
			if a.env != nil {
				return a.env.Close()
			}
			return nil
		},
	}
	root.PersistentFlags().StringVar(&a.configPath, "config", "/etc/roost/roost.yaml", "configuration `file`")
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(a.quotaCmd(), a.userCmd(), a.authCmd(), a.pwCmd(), a.mailboxCmd(), a.configCmd(), a.deliverCmd())
	return root
}

// action adapts a command's code so that its errors mean "failure" (exit 1,
// or the code an *exitError carries), not "usage error".
func action(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := f(cmd, args); err != nil {
			return &runError{err}
		}
		return nil
	}
}

// open builds the config, auth backend and store once. logTo receives the
// daemons' log lines (io.Discard for interactive commands).
func (a *app) open(ctx context.Context, logTo io.Writer) error {
	if a.env != nil {
		return nil
	}
	env, err := daemon.Open(ctx, a.configPath, "roostctl", logTo)
	if err != nil {
		return err
	}
	if a.policy, err = quotaPolicy(env.Config, env.Logger); err != nil {
		env.Close()
		return err
	}
	a.env = env
	return nil
}

// quotaPolicy builds the quota policy from the config as lmtpd does
// (cmd/lmtpd/main.go), reading the warning template file.
func quotaPolicy(cfg *config.Config, log *slog.Logger) (*quota.Policy, error) {
	q := cfg.Quota
	tmpl := ""
	if q.WarningTemplate != "" {
		b, err := os.ReadFile(q.WarningTemplate)
		if err != nil {
			return nil, fmt.Errorf("quota.warning_template: %w", err)
		}
		tmpl = string(b)
	}
	hostname, _ := os.Hostname()
	return quota.New(quota.Options{
		Default: int64(q.Default), GracePercent: q.GracePercent, Warnings: q.Warnings,
		Template: tmpl, Permanent: q.Permanent, Hostname: hostname, Logger: log,
	})
}

// lookup finds a user as the daemons would, with errors that say what to do.
func (a *app) lookup(ctx context.Context, user string) (*auth.Identity, error) {
	id, err := a.env.Auth.Lookup(ctx, user)
	switch {
	case errors.Is(err, auth.ErrNoSuchUser):
		return nil, fmt.Errorf("user %q not found in the %s auth backend: check the spelling (user or user@domain as in %s)",
			user, a.env.Config.Auth.Backend, a.authSource())
	case errors.Is(err, auth.ErrUnavailable):
		return nil, fmt.Errorf("cannot look up %q: %w (is the %s backend reachable? see auth.* in %s)",
			user, err, a.env.Config.Auth.Backend, a.configPath)
	case err != nil:
		return nil, fmt.Errorf("look up %q: %w", user, err)
	}
	return id, nil
}

func (a *app) authSource() string {
	if a.env.Config.Auth.Backend == "ldap" {
		return "the LDAP directory"
	}
	return a.env.Config.Auth.File.Path
}

// account is the store account of a looked-up user.
func (a *app) account(id *auth.Identity) (backend.Account, error) {
	return a.policy.Account(id, a.env.Config.Mail.Layout == "system")
}

// requireMaildir fails clearly when a user's Maildir is missing or
// unreadable, instead of letting the store create an empty one.
func requireMaildir(user, path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("user %s has no Maildir at %s yet (it is created at the first delivery or login)", user, path)
	case err != nil:
		return fmt.Errorf("cannot read the Maildir of %s: %w (run roostctl as the mail user or root)", user, err)
	case !fi.IsDir():
		return fmt.Errorf("the Maildir of %s, %s, is not a directory", user, path)
	}
	if _, err := os.ReadDir(path); err != nil {
		return fmt.Errorf("cannot read the Maildir of %s: %w (run roostctl as the mail user or root)", user, err)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table aligns tab-separated cells in columns; Flush writes the lines
// without trailing blanks.
type table struct {
	*tabwriter.Writer
	buf bytes.Buffer
	out io.Writer
}

func newTable(w io.Writer) *table {
	t := &table{out: w}
	t.Writer = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

func (t *table) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	lines := strings.SplitAfter(t.buf.String(), "\n")
	for i, l := range lines {
		if strings.HasSuffix(l, "\n") {
			lines[i] = strings.TrimRight(l, " \n") + "\n"
		}
	}
	t.buf.Reset()
	_, err := io.WriteString(t.out, strings.Join(lines, ""))
	return err
}

// humanBytes formats n with Dovecot's binary units, as quota limits are
// written (250M = 262144000 bytes shows as "250.0 MB").
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, suffix := float64(n)/unit, "KB"
	for _, s := range []string{"MB", "GB", "TB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + suffix
}

func limitString(n int64) string {
	if n == 0 {
		return "unlimited"
	}
	return humanBytes(n)
}
