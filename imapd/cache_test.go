package imapd

import (
	"fmt"
	"testing"

	"github.com/emersion/go-imap/v2"
)

func TestMsgCacheBounded(t *testing.T) {
	c := newMsgCache(100 << 10)
	for i := 0; i < 1000; i++ {
		c.put(cacheKey{"alice", fmt.Sprint(i)}, &msgInfo{env: &imap.Envelope{Subject: "s"}})
	}
	if c.used > c.max || c.lru.Len() == 0 || c.lru.Len() == 1000 {
		t.Fatalf("used %d of %d with %d entries", c.used, c.max, c.lru.Len())
	}
	if c.get(cacheKey{"alice", "999"}) == nil || c.get(cacheKey{"alice", "0"}) != nil {
		t.Fatal("the newest entry must stay and the oldest go")
	}
	off := newMsgCache(-1)
	off.put(cacheKey{"alice", "a"}, &msgInfo{})
	if off.get(cacheKey{"alice", "a"}) != nil {
		t.Fatal("a disabled cache kept an entry")
	}
}

func TestMsgCacheLoadingBounded(t *testing.T) {
	c := newMsgCache(0)
	if !c.startLoading(2) || !c.startLoading(2) {
		t.Fatal("two loads refused under a limit of two")
	}
	if c.startLoading(2) {
		t.Fatal("a third load admitted under a limit of two")
	}
	c.loaded()
	if !c.startLoading(2) {
		t.Fatal("a load refused after one ended")
	}
}
