package imapd_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/roost-mail/roost/imapd"
	"github.com/roost-mail/roost/metrics"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "imapd")
	ts := newTestServer(t, func(o *imapd.Options) { o.Metrics = m })
	ts.deliver(t, "alice", "", "Subject: m\n\nx\n")
	r := ts.raw(t)
	r.cmd("LOGIN alice nope")
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	r.cmd("FETCH 1 BODY.PEEK[]")
	r.cmd("LOGOUT")
	waitFor(t, func() bool { return strings.Contains(ts.logs.String(), "msg=logout") })
	want := `
# HELP roost_logins_total Login attempts by result (ok, fail, tempfail).
# TYPE roost_logins_total counter
roost_logins_total{daemon="imapd",result="fail"} 1
roost_logins_total{daemon="imapd",result="ok"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "roost_logins_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "roost_command_duration_seconds"); n < 2 {
		t.Errorf("%d command series, want SELECT and FETCH", n)
	}
	waitFor(t, func() bool {
		out, _ := reg.Gather()
		for _, mf := range out {
			if mf.GetName() == "roost_bytes_total" {
				for _, s := range mf.Metric {
					if s.GetCounter().GetValue() > 0 {
						return true
					}
				}
			}
		}
		return false
	})
}
