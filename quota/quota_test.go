package quota

import (
	"errors"
	"strings"
	"testing"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
)

func mustNew(t *testing.T, opts Options) *Policy {
	t.Helper()
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLimits(t *testing.T) {
	p := mustNew(t, Options{Default: 250 << 20})
	for _, tc := range []struct {
		bytes, msgs         int64
		wantBytes, wantMsgs int64
	}{
		{-1, -1, 250 << 20, 0},
		{0, -1, 0, 0},
		{1000, 50, 1000, 50},
	} {
		b, m := p.Limits(&auth.Identity{QuotaBytes: tc.bytes, QuotaMessages: tc.msgs})
		if b != tc.wantBytes || m != tc.wantMsgs {
			t.Errorf("Limits(%d,%d) = %d,%d, want %d,%d", tc.bytes, tc.msgs, b, m, tc.wantBytes, tc.wantMsgs)
		}
	}
}

func TestAccount(t *testing.T) {
	p := mustNew(t, Options{Default: 1000})
	id := &auth.Identity{User: "alice", Maildir: "/m/alice/Maildir", QuotaBytes: -1, QuotaMessages: 7, UID: 1001, GID: 100}
	a, err := p.Account(id, false)
	if err != nil {
		t.Fatal(err)
	}
	want := backend.Account{Name: "alice", Maildir: "/m/alice/Maildir", QuotaBytes: 1000, QuotaMessages: 7, UID: -1, GID: -1}
	if a != want {
		t.Errorf("virtual layout: got %+v, want %+v", a, want)
	}
	if a, _ = p.Account(id, true); a.UID != 1001 || a.GID != 100 {
		t.Errorf("system layout: owner %d:%d, want 1001:100", a.UID, a.GID)
	}
	if _, err := p.Account(&auth.Identity{User: "bob"}, false); err == nil {
		t.Error("identity without Maildir accepted")
	}
}

func TestCheck(t *testing.T) {
	strict := mustNew(t, Options{})
	grace := mustNew(t, Options{GracePercent: 10})
	for _, tc := range []struct {
		name     string
		p        *Policy
		q        backend.Quota
		size     int64
		wantOver bool
	}{
		{"unlimited", strict, backend.Quota{UsedBytes: 1 << 40}, 1 << 30, false},
		{"fits exactly", strict, backend.Quota{UsedBytes: 900, LimitBytes: 1000}, 100, false},
		{"one byte over", strict, backend.Quota{UsedBytes: 900, LimitBytes: 1000}, 101, true},
		{"size unknown at RCPT, under", strict, backend.Quota{UsedBytes: 999, LimitBytes: 1000}, 0, false},
		{"size unknown at RCPT, full", strict, backend.Quota{UsedBytes: 1000, LimitBytes: 1000}, 0, false},
		{"already over", strict, backend.Quota{UsedBytes: 1001, LimitBytes: 1000}, 0, true},
		{"grace lets last message over", grace, backend.Quota{UsedBytes: 900, LimitBytes: 1000}, 200, false},
		{"grace bounded", grace, backend.Quota{UsedBytes: 900, LimitBytes: 1000}, 201, true},
		{"grace: nothing once at limit", grace, backend.Quota{UsedBytes: 1000, LimitBytes: 1000}, 1, true},
		{"message count", strict, backend.Quota{UsedMessages: 10, LimitMessages: 10}, 1, true},
		{"message count fits", strict, backend.Quota{UsedMessages: 9, LimitMessages: 10}, 1, false},
	} {
		err := tc.p.Check(tc.q, tc.size)
		if (err != nil) != tc.wantOver {
			t.Errorf("%s: Check = %v, want over=%v", tc.name, err, tc.wantOver)
		}
		if err != nil && !errors.Is(err, backend.ErrOverQuota) {
			t.Errorf("%s: error %v does not wrap backend.ErrOverQuota", tc.name, err)
		}
	}
}

func TestPercentAndLevel(t *testing.T) {
	p := mustNew(t, Options{Warnings: []int{100, 80, 90, 80}})
	for _, tc := range []struct {
		q              backend.Quota
		percent, level int
	}{
		{backend.Quota{UsedBytes: 79, LimitBytes: 100}, 79, 0},
		{backend.Quota{UsedBytes: 80, LimitBytes: 100}, 80, 80},
		{backend.Quota{UsedBytes: 95, LimitBytes: 100}, 95, 90},
		{backend.Quota{UsedBytes: 130, LimitBytes: 100}, 130, 100},
		{backend.Quota{UsedBytes: 10, LimitBytes: 100, UsedMessages: 9, LimitMessages: 10}, 90, 90},
		{backend.Quota{UsedBytes: 1 << 40}, 0, 0},
	} {
		if got := Percent(tc.q); got != tc.percent {
			t.Errorf("Percent(%+v) = %d, want %d", tc.q, got, tc.percent)
		}
		if got := p.level(tc.q); got != tc.level {
			t.Errorf("level(%+v) = %d, want %d", tc.q, got, tc.level)
		}
	}
}

func TestNewRejects(t *testing.T) {
	for name, opts := range map[string]Options{
		"negative default":   {Default: -1},
		"negative grace":     {GracePercent: -5},
		"zero threshold":     {Warnings: []int{0, 90}},
		"template syntax":    {Template: "Subject: {{.Percent"},
		"unknown field":      {Template: "Subject: {{.Nope}}\n\nbody\n"},
		"not a mail message": {Template: "just text without a header block"},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: New accepted %+v", name, opts)
		}
	}
}

func TestRenderDefault(t *testing.T) {
	p := mustNew(t, Options{Hostname: "mail.example.edu"})
	msg, err := p.render("alice", 90, backend.Quota{UsedBytes: 236 << 20, LimitBytes: 250 << 20, UsedMessages: 1234})
	if err != nil {
		t.Fatal(err)
	}
	s := string(msg)
	for _, want := range []string{
		"Subject: Your mailbox is 94% full\r\n",
		"From: Mail System <postmaster@mail.example.edu>\r\n",
		"uses 236.0 MB of its 250.0 MB limit (94%)",
		"delete messages you no longer need",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("warning lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(strings.ReplaceAll(s, "\r\n", ""), "\n") {
		t.Error("warning has bare LF line ends")
	}
}
