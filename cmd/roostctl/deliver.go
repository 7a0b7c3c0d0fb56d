package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/lmtp"
)

func (a *app) deliverCmd() *cobra.Command {
	var user, folder, sender string
	cmd := &cobra.Command{
		Use:   "deliver -u USER [-m FOLDER] [-f SENDER]",
		Short: "Deliver a message from standard input (LDA for Postfix)",
		Long: `Store the message on standard input in USER's Maildir, with the same
quota policy and warnings as lmtpd. For Postfix's mailbox_command or a
pipe(8) transport (deploy/postfix/). -m delivers to FOLDER if it exists,
else to INBOX. -f adds a Return-Path header (pipe(8) adds one itself
with flags=R, local(8) always does).

Exit status: 0 delivered; 67 (EX_NOUSER) unknown user: Postfix bounces;
75 (EX_TEMPFAIL) over quota or a temporary problem: Postfix keeps the
message and retries; 77 (EX_NOPERM) over quota with quota.permanent:
Postfix bounces. The reason goes to standard error, which Postfix logs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if user == "" {
				return errors.New("deliver needs -u USER")
			}
			return a.deliver(cmd, user, folder, sender)
		},
	}
	cmd.Flags().StringVarP(&user, "user", "u", "", "recipient `user` (as the auth backend knows them)")
	cmd.Flags().StringVarP(&folder, "mailbox", "m", "", "deliver to `folder` if it exists (default INBOX)")
	cmd.Flags().StringVarP(&sender, "from", "f", "", "envelope `sender` for a Return-Path header")
	return cmd
}

// deliver returns only *exitError values: Postfix reads the status, so every
// failure must map to a code that keeps or bounces the message on purpose.
func (a *app) deliver(cmd *cobra.Command, user, folder, sender string) error {
	ctx := cmd.Context()
	tempfail := func(format string, args ...any) error {
		return &exitError{exTempFail, fmt.Errorf("4.3.0 "+format, args...)}
	}
	if err := a.open(ctx, a.stderr); err != nil {
		return tempfail("%v", err)
	}
	id, err := a.env.Auth.Lookup(ctx, user)
	switch {
	case errors.Is(err, auth.ErrNoSuchUser):
		return &exitError{exNoUser, fmt.Errorf("5.1.1 %s: user unknown", user)}
	case err != nil:
		return tempfail("looking up %s: %v", user, err)
	}
	acct, err := a.account(id)
	if err != nil {
		return tempfail("%v", err)
	}
	spool, size, err := spoolMessage(a.stdin, sender)
	if err != nil {
		return tempfail("reading the message: %v", err)
	}
	defer func() {
		spool.Close()
		os.Remove(spool.Name())
	}()
	u, err := a.env.Store.Open(ctx, acct)
	if err != nil {
		return tempfail("opening the Maildir of %s: %v", acct.Name, err)
	}
	defer u.Close()
	d := lmtp.Delivery{Policy: a.policy, User: u, Account: acct, Folder: folder, Logger: a.env.Logger.With("user", acct.Name)}
	res, stored, dup, err := d.Store(ctx, "", spool, size)
	switch {
	case errors.Is(err, backend.ErrOverQuota) && a.policy.Permanent():
		return &exitError{exNoPerm, fmt.Errorf("5.2.2 %s: mailbox full: %v", acct.Name, err)}
	case errors.Is(err, backend.ErrOverQuota):
		return &exitError{exTempFail, fmt.Errorf("4.2.2 %s: mailbox full: %v", acct.Name, err)}
	case err != nil:
		return tempfail("%s: %v", acct.Name, err)
	}
	if !dup {
		a.env.Logger.Info("delivered", "user", acct.Name, "mailbox", stored, "uid", res.UID, "size", res.Size)
	}
	return nil
}

// spoolMessage copies the message to a temporary file, dropping an mbox
// "From " envelope line (pipe(8) flag F) and adding Return-Path if sender
// is set. It returns the file positioned at the start and its size.
func spoolMessage(r io.Reader, sender string) (*os.File, int64, error) {
	f, err := os.CreateTemp("", "roost-deliver-*")
	if err != nil {
		return nil, 0, err
	}
	fail := func(err error) (*os.File, int64, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, 0, err
	}
	br := bufio.NewReader(r)
	if head, _ := br.Peek(5); bytes.Equal(head, []byte("From ")) {
		if _, err := br.ReadString('\n'); err != nil {
			return fail(err)
		}
	}
	if sender != "" {
		fmt.Fprintf(f, "Return-Path: <%s>\n", sender)
	}
	if _, err := io.Copy(f, br); err != nil {
		return fail(err)
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return fail(err)
	}
	if size == 0 {
		return fail(errors.New("the message is empty"))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	return f, size, nil
}
