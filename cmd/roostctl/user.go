package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/auth/fileauth"
)

func (a *app) userCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Look users up as the daemons see them"}
	var jsonOut bool
	lookup := &cobra.Command{
		Use:   "lookup USER",
		Short: "Show a user's canonical name, Maildir, quota limit and auth backend",
		Args:  cobra.ExactArgs(1),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := a.open(ctx, io.Discard); err != nil {
				return err
			}
			id, err := a.lookup(ctx, args[0])
			if err != nil {
				return err
			}
			acct, err := a.account(id)
			if err != nil {
				return err
			}
			out := userJSON{User: id.User, Maildir: id.Maildir, Home: id.Home,
				QuotaBytes: acct.QuotaBytes, QuotaMessages: acct.QuotaMessages,
				UID: id.UID, GID: id.GID, Backend: id.Backend}
			if jsonOut {
				return writeJSON(a.stdout, out)
			}
			tw := newTable(a.stdout)
			fmt.Fprintf(tw, "user:\t%s\n", out.User)
			fmt.Fprintf(tw, "maildir:\t%s\n", out.Maildir)
			if out.Home != "" {
				fmt.Fprintf(tw, "home:\t%s\n", out.Home)
			}
			fmt.Fprintf(tw, "quota:\t%s\n", limitString(out.QuotaBytes))
			if out.QuotaMessages > 0 {
				fmt.Fprintf(tw, "quota messages:\t%d\n", out.QuotaMessages)
			}
			if out.UID >= 0 {
				fmt.Fprintf(tw, "uid/gid:\t%d/%d\n", out.UID, out.GID)
			}
			fmt.Fprintf(tw, "backend:\t%s\n", out.Backend)
			return tw.Flush()
		}),
	}
	lookup.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.AddCommand(lookup)
	return cmd
}

type userJSON struct {
	User          string `json:"user"`
	Maildir       string `json:"maildir"`
	Home          string `json:"home,omitempty"`
	QuotaBytes    int64  `json:"quota_bytes"`
	QuotaMessages int64  `json:"quota_messages"`
	UID           int    `json:"uid"`
	GID           int    `json:"gid"`
	Backend       string `json:"backend"`
}

func (a *app) authCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "auth", Short: "Check logins"}
	test := &cobra.Command{
		Use:   "test USER",
		Short: "Check USER's password (read from a prompt, or from standard input)",
		Long: `Check a password the way imapd and pop3d do. The password is read from
the terminal without echo, or as the first line of standard input; it is
never printed or logged.`,
		Args: cobra.ExactArgs(1),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := a.open(ctx, io.Discard); err != nil {
				return err
			}
			pw, err := a.readPassword("Password for " + args[0] + ": ")
			if err != nil {
				return err
			}
			id, err := a.env.Auth.Authenticate(ctx, args[0], pw)
			switch {
			case errors.Is(err, auth.ErrUnavailable):
				fmt.Fprintf(a.stdout, "auth test %s: could not check: %v\n", args[0], err)
				fmt.Fprintf(a.stdout, "the %s backend did not answer; check auth.* in %s and that the server is up\n",
					a.env.Config.Auth.Backend, a.configPath)
				return errReported
			case errors.Is(err, auth.ErrInvalidCredentials):
				fmt.Fprintf(a.stdout, "auth test %s: FAILED: unknown user or wrong password\n", args[0])
				return errReported
			case err != nil:
				return err
			}
			fmt.Fprintf(a.stdout, "auth test %s: OK (user %s, backend %s, maildir %s)\n", args[0], id.User, id.Backend, id.Maildir)
			return nil
		}),
	}
	cmd.AddCommand(test)
	return cmd
}

func (a *app) pwCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "pw", Short: "Password hashes for the passwd-file"}
	var scheme string
	hash := &cobra.Command{
		Use:   "hash",
		Short: "Print a passwd-file-ready hash of a password (like doveadm pw)",
		Long: `Read a password (prompted twice on a terminal, else the first line of
standard input) and print its hash with the {SCHEME} prefix, ready for the
password field of the passwd-file. Schemes: ` + strings.Join(fileauth.Schemes(), ", ") + `.`,
		Args: cobra.NoArgs,
		RunE: action(func(cmd *cobra.Command, args []string) error {
			pw, err := a.readPassword("New password: ")
			if err != nil {
				return err
			}
			if isTerminal(a.stdin) {
				again, err := a.readPassword("Retype password: ")
				if err != nil {
					return err
				}
				if again != pw {
					return errors.New("the passwords do not match")
				}
			}
			h, err := fileauth.Hash(scheme, pw)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(a.stdout, h)
			return err
		}),
	}
	hash.Flags().StringVarP(&scheme, "scheme", "s", "BLF-CRYPT", "hash `scheme`: BLF-CRYPT, SHA512-CRYPT or ARGON2ID (see the list above)")
	cmd.AddCommand(hash)
	return cmd
}

// readPassword reads one line: from the terminal with echo off (prompt on
// stderr), else from standard input.
func (a *app) readPassword(prompt string) (string, error) {
	f, ok := a.stdin.(*os.File)
	if ok && isTerminal(f) {
		fmt.Fprint(a.stderr, prompt)
		defer fmt.Fprintln(a.stderr)
		restore, err := noEcho(int(f.Fd()))
		if err != nil {
			return "", err
		}
		defer restore()
	}
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", errors.New("no password given: type it at the prompt or pipe it to standard input")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func noEcho(fd int) (restore func(), err error) {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	old := *t
	t.Lflag &^= unix.ECHO
	t.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return nil, err
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, &old) }, nil
}
