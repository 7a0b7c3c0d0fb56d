package main

import (
	"cmp"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"

	"github.com/spf13/cobra"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/maildir"
	"github.com/roost-mail/roost/quota"
)

// reportUser is one user to report on or recalculate.
type reportUser struct {
	name                  string
	maildir               string
	limitBytes, limitMsgs int64
	// known: found in the auth backend, so the limits above apply; else
	// the limits recorded in maildirsize are shown.
	known bool
}

func (a *app) quotaReportCmd() *cobra.Command {
	var (
		over            int
		sortBy          string
		jsonOut, csvOut bool
	)
	cmd := &cobra.Command{
		Use:   "report [--over PCT] [--sort used|percent] [--json|--csv]",
		Short: "Usage of every user, e.g. who is over 90%",
		Long: `Report every user's usage: those the auth backend lists (passwd-file), or
else every Maildir under mail.root (<root>/<user>/Maildir and
<root>/<domain>/<local>/Maildir, limits as recorded in maildirsize). Only
maildirsize files are read; stale ones are recalculated by the Maildir++
rules. --over 90 shows who uses 90% or more.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("quota report takes no arguments, got %q", args)
			}
			if sortBy != "user" && sortBy != "used" && sortBy != "percent" {
				return fmt.Errorf("--sort %q: use user, used or percent", sortBy)
			}
			if jsonOut && csvOut {
				return errors.New("--json and --csv exclude each other")
			}
			return nil
		},
		RunE: action(func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := a.open(ctx, io.Discard); err != nil {
				return err
			}
			users, err := a.reportUsers(ctx)
			if err != nil {
				return err
			}
			rows, err := a.report(ctx, users)
			rows = slices.DeleteFunc(rows, func(r quotaJSON) bool { return r.Percent < over })
			sortRows(rows, sortBy)
			var werr error
			switch {
			case jsonOut:
				if rows == nil {
					rows = []quotaJSON{}
				}
				werr = writeJSON(a.stdout, rows)
			case csvOut:
				werr = writeCSV(a.stdout, rows)
			default:
				werr = a.printReport(rows)
			}
			return errors.Join(err, werr)
		}),
	}
	cmd.Flags().IntVar(&over, "over", 0, "only users at or above `PCT` percent")
	cmd.Flags().StringVar(&sortBy, "sort", "user", "sort by user, used (bytes, largest first) or percent (fullest first)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().BoolVar(&csvOut, "csv", false, "print CSV")
	return cmd
}

// reportUsers lists the users to report on: the auth backend's, if it can
// list them (looked up later, in parallel, by resolve), else every Maildir
// under mail.root.
func (a *app) reportUsers(ctx context.Context) ([]reportUser, error) {
	l, ok := a.env.Auth.(auth.Lister)
	if !ok {
		return scanRoot(a.env.Config.Mail.Root)
	}
	names, err := l.ListUsers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	out := make([]reportUser, len(names))
	for i, n := range names {
		out[i] = reportUser{name: n, known: true}
	}
	return out, nil
}

// resolve fills in a listed user's Maildir and limits from the auth
// backend; users found by scanning need nothing.
func (a *app) resolve(ctx context.Context, u *reportUser) error {
	if !u.known || u.maildir != "" {
		return nil
	}
	id, err := a.lookup(ctx, u.name)
	if err != nil {
		return err
	}
	acct, err := a.account(id)
	if err != nil {
		return err
	}
	u.name, u.maildir, u.limitBytes, u.limitMsgs = acct.Name, acct.Maildir, acct.QuotaBytes, acct.QuotaMessages
	return nil
}

// scanRoot finds <root>/<user>/Maildir and <root>/<domain>/<local>/Maildir,
// the layout auth.MailRootPath gives users without a home.
func scanRoot(root string) ([]reportUser, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("mail.root: %w", err)
	}
	var out []reportUser
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		if isDir(filepath.Join(dir, "Maildir")) {
			out = append(out, reportUser{name: e.Name(), maildir: filepath.Join(dir, "Maildir")})
			continue
		}
		subs, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, s := range subs {
			if md := filepath.Join(dir, s.Name(), "Maildir"); s.IsDir() && isDir(md) {
				out = append(out, reportUser{name: s.Name() + "@" + e.Name(), maildir: md})
			}
		}
	}
	return out, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// report looks every user up and reads their maildirsize, in parallel (an
// LDAP backend answers several lookups at once); a user who cannot be
// looked up or read is reported in the joined error and left out.
func (a *app) report(ctx context.Context, users []reportUser) ([]quotaJSON, error) {
	rows := make([]quotaJSON, len(users))
	errs := make([]error, len(users))
	prog := a.newProgress(len(users))
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) * 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if errs[i] = a.resolve(ctx, &users[i]); errs[i] == nil {
					rows[i], errs[i] = reportOne(users[i], a.storeOptions())
				}
				prog.step()
			}
		}()
	}
	for i := range users {
		next <- i
	}
	close(next)
	wg.Wait()
	prog.done()
	out := rows[:0]
	for i, r := range rows {
		if errs[i] == nil {
			out = append(out, r)
		}
	}
	return out, errors.Join(errs...)
}

func reportOne(u reportUser, opts maildir.Options) (quotaJSON, error) {
	row := quotaJSON{User: u.name, Maildir: u.maildir, LimitBytes: u.limitBytes, LimitMessages: u.limitMsgs}
	q, err := readQuota(u.maildir, opts)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		row.Note = "no Maildir yet"
		return row, nil
	case err != nil:
		return row, err
	}
	if u.known {
		q.LimitBytes, q.LimitMessages = u.limitBytes, u.limitMsgs
	} else {
		row.LimitBytes, row.LimitMessages = q.LimitBytes, q.LimitMessages
		row.Note = "not in the auth backend's list; limit from maildirsize"
	}
	row.UsedBytes, row.Messages, row.Percent = q.UsedBytes, q.UsedMessages, quota.Percent(q)
	return row, nil
}

func sortRows(rows []quotaJSON, by string) {
	slices.SortStableFunc(rows, func(x, y quotaJSON) int {
		switch by {
		case "used":
			if c := cmp.Compare(y.UsedBytes, x.UsedBytes); c != 0 {
				return c
			}
		case "percent":
			if c := cmp.Compare(y.Percent, x.Percent); c != 0 {
				return c
			}
		}
		return cmp.Compare(x.User, y.User)
	})
}

func (a *app) printReport(rows []quotaJSON) error {
	tw := newTable(a.stdout)
	fmt.Fprintln(tw, "USER\tUSED\tLIMIT\tPERCENT\tMESSAGES\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d%%\t%d\t%s\n", r.User, humanBytes(r.UsedBytes), limitString(r.LimitBytes), r.Percent, r.Messages, r.Note)
	}
	return tw.Flush()
}

func writeCSV(w io.Writer, rows []quotaJSON) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"user", "used_bytes", "limit_bytes", "messages", "percent", "limit_messages", "maildir"})
	for _, r := range rows {
		cw.Write([]string{r.User, strconv.FormatInt(r.UsedBytes, 10), strconv.FormatInt(r.LimitBytes, 10),
			strconv.FormatInt(r.Messages, 10), strconv.Itoa(r.Percent), strconv.FormatInt(r.LimitMessages, 10), r.Maildir})
	}
	cw.Flush()
	return cw.Error()
}

// progress draws "quota report: n/total" on standard error when it is a
// terminal and the run is long enough to need it.
type progress struct {
	w        io.Writer // nil: no progress shown
	mu       sync.Mutex
	n, total int
}

func (a *app) newProgress(total int) *progress {
	p := &progress{total: total}
	if total >= 500 && isTerminal(a.stderr) {
		p.w = a.stderr
	}
	return p
}

func (p *progress) step() {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if p.n%100 == 0 || p.n == p.total {
		fmt.Fprintf(p.w, "\rquota report: %d/%d users", p.n, p.total)
	}
}

func (p *progress) done() {
	if p.w != nil {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
