package imapd

import (
	"container/list"
	"sync"
	"sync/atomic"

	"github.com/emersion/go-imap/v2"
)

// msgInfo is what Roost derives from a message's content and keeps between
// commands: its ENVELOPE, header length and, once some command needed it,
// its MIME structure. A message file never changes under one key, so an
// entry never goes stale; it is only evicted.
type msgInfo struct {
	env    *imap.Envelope
	hdrLen int64              // octets of the top-level header, blank line included
	tree   *part              // nil until parsed
	bs     imap.BodyStructure // with tree
	// wire is env as a FETCH response writes it without UTF8=ACCEPT,
	// once a FETCH ENVELOPE needed it (wireEnvelope); wireUTF8 says it is
	// the same with UTF8=ACCEPT.
	wire     []byte
	wireUTF8 bool
	cost     int64
}

// msgCache is a least-recently-used cache of msgInfo bounded by an
// estimate of its memory use. It is safe for concurrent use.
type msgCache struct {
	max int64 // < 0 disables the cache

	// loading counts the FETCHes whose messages are being loaded ahead
	// into the cache (infoPrefetch), across all sessions.
	loading atomic.Int64

	mu    sync.Mutex
	used  int64
	lru   *list.List // of *cacheEntry, most recent first
	items map[cacheKey]*list.Element
}

// cacheKey names a message for the cache: the user, and the message's
// store key (unique in its mailbox and never reused for other content)
// prefixed with the mailbox when the store has none.
type cacheKey struct {
	user, msg string
}

type cacheEntry struct {
	key  cacheKey
	info *msgInfo
}

func newMsgCache(max int64) *msgCache {
	return &msgCache{max: max, lru: list.New(), items: make(map[cacheKey]*list.Element)}
}

// startLoading admits one more FETCH to load messages ahead, unless limit
// FETCHes are at it already; loaded must be called when it ends.
func (c *msgCache) startLoading(limit int) bool {
	if c.loading.Add(1) > int64(limit) {
		c.loading.Add(-1)
		return false
	}
	return true
}

func (c *msgCache) loaded() { c.loading.Add(-1) }

func (c *msgCache) get(key cacheKey) *msgInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*cacheEntry).info
	}
	return nil
}

func (c *msgCache) put(key cacheKey, info *msgInfo) {
	if c.max < 0 {
		return
	}
	info.cost = estimateCost(key, info)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		old := e.Value.(*cacheEntry)
		c.used += info.cost - old.info.cost
		old.info = info
		c.lru.MoveToFront(e)
	} else {
		c.items[key] = c.lru.PushFront(&cacheEntry{key: key, info: info})
		c.used += info.cost
	}
	for c.used > c.max && c.lru.Len() > 0 {
		e := c.lru.Back()
		ce := e.Value.(*cacheEntry)
		c.lru.Remove(e)
		delete(c.items, ce.key)
		c.used -= ce.info.cost
	}
}

// estimateCost approximates the heap bytes an entry holds: fixed overheads
// plus the strings it keeps.
func estimateCost(key cacheKey, info *msgInfo) int64 {
	n := int64(200 + len(key.user) + len(key.msg))
	if env := info.env; env != nil {
		n += 160 + int64(len(env.Subject)+len(env.MessageID))
		for _, l := range [][]imap.Address{env.From, env.Sender, env.ReplyTo, env.To, env.Cc, env.Bcc} {
			for _, a := range l {
				n += 64 + int64(len(a.Name)+len(a.Mailbox)+len(a.Host))
			}
		}
		for _, id := range env.InReplyTo {
			n += 16 + int64(len(id))
		}
	}
	n += int64(len(info.wire))
	if info.tree != nil {
		n += 400 * countParts(info.tree)
	}
	return n
}

func countParts(pt *part) int64 {
	n := int64(1)
	for _, c := range pt.children {
		n += countParts(c)
	}
	if pt.msg != nil {
		n += countParts(pt.msg)
	}
	return n
}
