package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/maildir"
	"github.com/roost-mail/roost/quota"
)

// quotaJSON is one user's line in `quota get --json` and `quota report
// --json`; the first five fields are a contract (design.md).
type quotaJSON struct {
	User          string       `json:"user"`
	UsedBytes     int64        `json:"used_bytes"`
	LimitBytes    int64        `json:"limit_bytes"`
	Messages      int64        `json:"messages"`
	Percent       int          `json:"percent"`
	LimitMessages int64        `json:"limit_messages"`
	Maildir       string       `json:"maildir"`
	Folders       []folderJSON `json:"folders,omitempty"`
	// Note explains an unusual line ("no Maildir yet", "not in auth").
	Note string `json:"note,omitempty"`
}

type folderJSON struct {
	Name     string `json:"name"`
	Messages int64  `json:"messages"`
	Bytes    int64  `json:"bytes"`
	Counted  bool   `json:"counted"`
}

func (a *app) quotaCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "quota", Short: "Show, report and recalculate storage quotas"}
	cmd.AddCommand(a.quotaGetCmd(), a.quotaReportCmd(), a.quotaRecalcCmd())
	return cmd
}

func (a *app) quotaGetCmd() *cobra.Command {
	var jsonOut, verbose bool
	cmd := &cobra.Command{
		Use:   "get USER",
		Short: "Show USER's usage, limit and percentage (-v: per folder)",
		Long: `Show a user's storage use from the Maildir++ maildirsize file (fast: the
message files are not read) and the limit that applies to them (auth entry,
else quota.default). -v adds each folder's messages and size, counted from
the directories.`,
		Args: cobra.ExactArgs(1),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := a.open(ctx, io.Discard); err != nil {
				return err
			}
			q, err := a.userQuota(ctx, args[0])
			if err != nil {
				return err
			}
			if verbose && q.Note == "" {
				stats, err := maildir.FolderUsage(q.Maildir)
				if err != nil {
					return err
				}
				for _, s := range stats {
					q.Folders = append(q.Folders, folderJSON{Name: s.Name, Messages: s.Messages, Bytes: s.Bytes,
						Counted: !s.Trash || a.env.Config.Quota.IncludeTrash})
				}
			}
			if jsonOut {
				return writeJSON(a.stdout, q)
			}
			return a.printQuota(q)
		}),
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "show each folder")
	return cmd
}

// userQuota looks user up and reads their maildirsize.
func (a *app) userQuota(ctx context.Context, user string) (quotaJSON, error) {
	id, err := a.lookup(ctx, user)
	if err != nil {
		return quotaJSON{}, err
	}
	acct, err := a.account(id)
	if err != nil {
		return quotaJSON{}, err
	}
	out := quotaJSON{User: acct.Name, Maildir: acct.Maildir, LimitBytes: acct.QuotaBytes, LimitMessages: acct.QuotaMessages}
	q, err := readQuota(acct.Maildir, a.storeOptions())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		out.Note = "no Maildir yet"
		return out, nil
	case err != nil:
		return out, fmt.Errorf("%w (run roostctl as the mail user or root)", err)
	}
	q.LimitBytes, q.LimitMessages = acct.QuotaBytes, acct.QuotaMessages
	out.UsedBytes, out.Messages, out.Percent = q.UsedBytes, q.UsedMessages, quota.Percent(q)
	return out, nil
}

// storeOptions are the store options that decide usage, as the daemons
// use them.
func (a *app) storeOptions() maildir.Options {
	return maildir.Options{IncludeTrash: a.env.Config.Quota.IncludeTrash, Fsync: a.env.Config.Mail.Fsync}
}

// readQuota reads maildirsize, and reports a missing Maildir as
// fs.ErrNotExist rather than creating anything.
func readQuota(path string, opts maildir.Options) (backend.Quota, error) {
	if _, err := os.Stat(path); err != nil {
		return backend.Quota{}, err
	}
	return maildir.ReadQuota(path, opts)
}

func (a *app) printQuota(q quotaJSON) error {
	tw := newTable(a.stdout)
	fmt.Fprintf(tw, "user:\t%s\n", q.User)
	fmt.Fprintf(tw, "used:\t%s (%d bytes)\n", humanBytes(q.UsedBytes), q.UsedBytes)
	if q.LimitBytes > 0 {
		fmt.Fprintf(tw, "limit:\t%s (%d bytes)\n", humanBytes(q.LimitBytes), q.LimitBytes)
	} else {
		fmt.Fprintf(tw, "limit:\tunlimited\n")
	}
	fmt.Fprintf(tw, "percent:\t%d%%\n", q.Percent)
	if q.LimitMessages > 0 {
		fmt.Fprintf(tw, "messages:\t%d of %d\n", q.Messages, q.LimitMessages)
	} else {
		fmt.Fprintf(tw, "messages:\t%d\n", q.Messages)
	}
	fmt.Fprintf(tw, "maildir:\t%s\n", q.Maildir)
	if q.Note != "" {
		fmt.Fprintf(tw, "note:\t%s\n", q.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(q.Folders) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout)
	tw = newTable(a.stdout)
	fmt.Fprintln(tw, "FOLDER\tMESSAGES\tSIZE\t")
	for _, f := range q.Folders {
		note := ""
		if !f.Counted {
			note = "(not counted)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", f.Name, f.Messages, humanBytes(f.Bytes), note)
	}
	return tw.Flush()
}

func (a *app) quotaRecalcCmd() *cobra.Command {
	var all, jsonOut bool
	cmd := &cobra.Command{
		Use:   "recalc USER | --all",
		Short: "Recount usage from the message files and rewrite maildirsize, reporting the drift",
		Long: `Recount a user's usage from the message files (after files were added or
removed behind the servers' backs, e.g. by Postfix's virtual(8) or a
restore), rewrite maildirsize with the configured limit, and show how far
the recorded usage had drifted.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if all != (len(args) == 0) {
				return errors.New("give either one USER or --all")
			}
			return nil
		},
		RunE: action(func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := a.open(ctx, io.Discard); err != nil {
				return err
			}
			var targets []reportUser
			if all {
				var err error
				if targets, err = a.reportUsers(ctx); err != nil {
					return err
				}
			} else {
				id, err := a.lookup(ctx, args[0])
				if err != nil {
					return err
				}
				acct, err := a.account(id)
				if err != nil {
					return err
				}
				if err := requireMaildir(acct.Name, acct.Maildir); err != nil {
					return err
				}
				targets = []reportUser{{name: acct.Name, maildir: acct.Maildir, limitBytes: acct.QuotaBytes, limitMsgs: acct.QuotaMessages, known: true}}
			}
			rows, err := a.recalc(ctx, targets)
			if jsonOut {
				if rows == nil {
					rows = []recalcJSON{}
				}
				if jerr := writeJSON(a.stdout, rows); jerr != nil {
					return jerr
				}
			} else {
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "USER\tBEFORE\tAFTER\tDRIFT\tMESSAGES\tDRIFT")
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d -> %d\t%+d\n", r.User, humanBytes(r.BeforeBytes), humanBytes(r.AfterBytes),
						signedBytes(r.AfterBytes-r.BeforeBytes), r.BeforeMessages, r.AfterMessages, r.AfterMessages-r.BeforeMessages)
				}
				if ferr := tw.Flush(); ferr != nil {
					return ferr
				}
			}
			return err
		}),
	}
	cmd.Flags().BoolVar(&all, "all", false, "recalculate every user")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

type recalcJSON struct {
	User           string `json:"user"`
	BeforeBytes    int64  `json:"before_bytes"`
	BeforeMessages int64  `json:"before_messages"`
	AfterBytes     int64  `json:"after_bytes"`
	AfterMessages  int64  `json:"after_messages"`
}

// recalc recalculates each user that has a Maildir, after bringing the
// maildirsize limit in step with the configured one. It goes on past
// failures and returns them joined.
func (a *app) recalc(ctx context.Context, users []reportUser) ([]recalcJSON, error) {
	var rows []recalcJSON
	var errs []error
	opts := a.storeOptions()
	for _, u := range users {
		if err := a.resolve(ctx, &u); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := os.Stat(u.maildir); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if u.known {
			if err := maildir.SetQuotaLimit(u.maildir, u.limitBytes, u.limitMsgs); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		before, after, err := maildir.RecalcQuota(u.maildir, opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rows = append(rows, recalcJSON{User: u.name, BeforeBytes: before.UsedBytes, BeforeMessages: before.UsedMessages,
			AfterBytes: after.UsedBytes, AfterMessages: after.UsedMessages})
	}
	return rows, errors.Join(errs...)
}

func signedBytes(n int64) string {
	if n < 0 {
		return "-" + humanBytes(-n)
	}
	return "+" + humanBytes(n)
}
