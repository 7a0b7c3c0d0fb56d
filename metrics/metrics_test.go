package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRecord(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "imapd")
	m.ConnOpened()
	m.Login("fail")
	m.Login("ok")
	m.Command("FETCH", 3*time.Millisecond)
	m.QuotaRejection()
	m.Bytes(10, 20)
	want := `
# HELP roost_logins_total Login attempts by result (ok, fail, tempfail).
# TYPE roost_logins_total counter
roost_logins_total{daemon="imapd",result="fail"} 1
roost_logins_total{daemon="imapd",result="ok"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "roost_logins_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.commands); n != 1 {
		t.Errorf("command series = %d, want 1", n)
	}
	var nilM *Metrics
	nilM.ConnOpened() // must not panic
	nilM.Command("X", time.Second)
}
