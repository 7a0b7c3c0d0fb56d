package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/roost-mail/roost/backend"
)

type mailboxJSON struct {
	Name        string `json:"name"`
	SpecialUse  string `json:"special_use,omitempty"`
	Subscribed  bool   `json:"subscribed"`
	Messages    uint32 `json:"messages"`
	Unseen      uint32 `json:"unseen"`
	Deleted     uint32 `json:"deleted"`
	Bytes       int64  `json:"bytes"`
	UIDNext     uint32 `json:"uidnext"`
	UIDValidity uint32 `json:"uidvalidity"`
}

func (a *app) mailboxCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "mailbox", Short: "List a user's folders and their status"}
	var jsonOut bool
	list := &cobra.Command{
		Use:   "list USER",
		Short: "List USER's folders with messages, unseen, size and UIDVALIDITY",
		Args:  cobra.ExactArgs(1),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			boxes, err := a.mailboxStatus(cmd.Context(), args[0], "")
			if err != nil {
				return err
			}
			return a.printMailboxes(boxes, jsonOut)
		}),
	}
	list.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	status := &cobra.Command{
		Use:   "status USER [MAILBOX]",
		Short: "Show the status of one of USER's folders (default INBOX)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			name := "INBOX"
			if len(args) == 2 {
				name = args[1]
			}
			boxes, err := a.mailboxStatus(cmd.Context(), args[0], name)
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(a.stdout, boxes[0])
			}
			return a.printMailboxes(boxes, false)
		}),
	}
	status.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.AddCommand(list, status)
	return cmd
}

// mailboxStatus returns the status of every folder of user, or only of
// folder when it is not "".
func (a *app) mailboxStatus(ctx context.Context, user, folder string) ([]mailboxJSON, error) {
	if err := a.open(ctx, io.Discard); err != nil {
		return nil, err
	}
	id, err := a.lookup(ctx, user)
	if err != nil {
		return nil, err
	}
	acct, err := a.account(id)
	if err != nil {
		return nil, err
	}
	if err := requireMaildir(acct.Name, acct.Maildir); err != nil {
		return nil, err
	}
	u, err := a.env.Store.Open(ctx, acct)
	if err != nil {
		return nil, fmt.Errorf("open the Maildir of %s: %w", acct.Name, err)
	}
	defer u.Close()
	infos, err := u.ListMailboxes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the folders of %s: %w", acct.Name, err)
	}
	var out []mailboxJSON
	for _, info := range infos {
		if info.NoSelect || (folder != "" && info.Name != folder) {
			continue
		}
		st, err := status(ctx, u, info.Name)
		if err != nil {
			return nil, fmt.Errorf("status of %s of %s: %w", info.Name, acct.Name, err)
		}
		out = append(out, mailboxJSON{Name: info.Name, SpecialUse: info.SpecialUse, Subscribed: info.Subscribed,
			Messages: st.Messages, Unseen: st.Unseen, Deleted: st.Deleted, Bytes: st.Size,
			UIDNext: uint32(st.UIDNext), UIDValidity: st.UIDValidity})
	}
	if folder != "" && len(out) == 0 {
		return nil, fmt.Errorf("%s has no folder %q: %w (roostctl mailbox list %s shows them)", acct.Name, folder, backend.ErrNoSuchMailbox, user)
	}
	return out, nil
}

func status(ctx context.Context, u backend.User, name string) (backend.Status, error) {
	mb, err := u.OpenMailbox(ctx, name)
	if err != nil {
		return backend.Status{}, err
	}
	st, err := mb.Status(ctx)
	return st, errors.Join(err, mb.Close())
}

func (a *app) printMailboxes(boxes []mailboxJSON, jsonOut bool) error {
	if jsonOut {
		if boxes == nil {
			boxes = []mailboxJSON{}
		}
		return writeJSON(a.stdout, boxes)
	}
	tw := newTable(a.stdout)
	fmt.Fprintln(tw, "MAILBOX\tMESSAGES\tUNSEEN\tSIZE\tUIDNEXT\tUIDVALIDITY\tSPECIAL-USE")
	for _, b := range boxes {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%d\t%s\n", b.Name, b.Messages, b.Unseen, humanBytes(b.Bytes), b.UIDNext, b.UIDValidity, b.SpecialUse)
	}
	return tw.Flush()
}
