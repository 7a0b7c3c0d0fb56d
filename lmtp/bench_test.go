package lmtp_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/roost-mail/roost/quota"
)

// BenchmarkLMTPDeliver: 10 KB messages over 4 concurrent LMTP connections
// (the shape of Postfix's lmtp client under load) into Maildirs with fsync
// on, one recipient per transaction, spread over the test users. Reports
// messages per second.
func BenchmarkLMTPDeliver(b *testing.B) {
	e := newEnvTB(b, quota.Options{}, nil)
	const clients = 4
	var users []string
	for i := range 8 {
		users = append(users, fmt.Sprintf("b%d@mx.test", i))
	}
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", e.tcp, 5*time.Second)
			if err != nil {
				b.Error(err)
				return
			}
			c := smtp.NewClientLMTP(conn)
			defer c.Close()
			if err := c.Hello("bench"); err != nil {
				b.Error(err)
				return
			}
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				rcpt := users[int(i)%len(users)]
				msg := message(fmt.Sprintf("bench-%d-%d@x", w, i), 10*1024)
				if err := c.SendMail("s@example.org", []string{rcpt}, strings.NewReader(msg)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
