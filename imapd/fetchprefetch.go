package imapd

import (
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/roost-mail/roost/backend"
)

// A FETCH of ENVELOPE (or another item derived from the content) over
// messages the cache does not hold spends nearly all its time opening and
// reading message files, one after the other. infoPrefetch loads them
// ahead of the writer with a few goroutines instead, in chunks, at most
// prefetchWindow chunks ahead of the one being written, so that a client
// that reads slowly does not make the server read the whole mailbox into
// the cache before the first response is taken.
//
// Four workers keep several opens and reads in flight: a disk that is not
// in the page cache serves them together, and on a warm one the first
// FETCH ENVELOPE of a 100,000-message INBOX took 8% less time than with
// two on a 2-core machine that also ran the client.
//
// At most GOMAXPROCS (and at least two) FETCHes load ahead at once in a
// server; the others load as they write, as before: a file system call
// holds a thread, and thousands of sessions' workers waiting on a slow
// disk together must not exhaust them.
//
// A chunk of messages whose MIME structure is wanted (BODYSTRUCTURE) is
// smaller: each message is read whole, and a few large attachments must
// spread over the workers instead of all falling into one chunk.
const (
	prefetchChunk     = 256     // messages a worker loads at a time
	prefetchTreeChunk = 8       // the same when each message is read whole
	prefetchTreeBytes = 1 << 20 // or fewer, once their known sizes reach this
	prefetchWindow    = 8       // chunks loaded but not yet written, at most
	prefetchWorkers   = 4
)

func maxPrefetches() int { return max(2, runtime.GOMAXPROCS(0)) }

// infoSlot is the outcome of loadInfo for one message.
type infoSlot struct {
	info *msgInfo
	err  error
}

type infoPrefetch struct {
	cache  *msgCache
	base   int // the FETCH's index of slots[0]
	slots  []infoSlot
	ends   []int           // chunk k is slots[ends[k-1]:ends[k]]
	loaded []chan struct{} // loaded[k] is closed once chunk k is
	next   atomic.Int64    // the next chunk a worker takes
	tokens chan struct{}   // one per chunk a worker may still take
	stop   chan struct{}
	wg     sync.WaitGroup
}

// startPrefetch starts loading the msgInfo of the messages a FETCH will
// write from its i-th on (view[idx[i]], …), as loadInfo would with
// needTree and needWire. It returns nil if there are too few left for it
// to pay, or if maxPrefetches FETCHes load ahead already.
func (s *session) startPrefetch(view []backend.Message, idx []int, i int, needTree, needWire bool) *infoPrefetch {
	msgs := make([]*backend.Message, 0, len(idx)-i)
	for _, k := range idx[i:] {
		msgs = append(msgs, &view[k])
	}
	ends := chunkEnds(msgs, needTree)
	chunks := len(ends)
	if chunks < 2 || !s.srv.cache.startLoading(maxPrefetches()) {
		return nil
	}
	p := &infoPrefetch{
		cache:  s.srv.cache,
		base:   i,
		slots:  make([]infoSlot, len(msgs)),
		ends:   ends,
		loaded: make([]chan struct{}, chunks),
		tokens: make(chan struct{}, chunks),
		stop:   make(chan struct{}),
	}
	for k := range p.loaded {
		p.loaded[k] = make(chan struct{})
	}
	for range min(prefetchWindow, chunks) {
		p.tokens <- struct{}{}
	}
	for range prefetchWorkers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			var scratch fetchScratch
			for {
				select {
				case <-p.tokens:
				case <-p.stop:
					return
				}
				k := int(p.next.Add(1) - 1)
				if k >= chunks {
					return
				}
				start := 0
				if k > 0 {
					start = ends[k-1]
				}
				for i := start; i < ends[k]; i++ {
					select {
					case <-p.stop:
						return
					default:
					}
					p.slots[i].info, p.slots[i].err = s.loadInfo(msgs[i], needTree, needWire, &scratch)
				}
				close(p.loaded[k])
			}
		}()
	}
	return p
}

// chunkEnds splits msgs into the chunks the workers take: prefetchChunk
// messages each, or with needTree prefetchTreeChunk and at most about
// prefetchTreeBytes of messages whose size is known.
func chunkEnds(msgs []*backend.Message, needTree bool) []int {
	limit, size := prefetchChunk, int64(0)
	if needTree {
		limit = prefetchTreeChunk
	}
	var ends []int
	start := 0
	for i, m := range msgs {
		size += max(m.Size, 0)
		if i+1-start == limit || needTree && size >= prefetchTreeBytes {
			ends = append(ends, i+1)
			start, size = i+1, 0
		}
	}
	if start < len(msgs) {
		ends = append(ends, len(msgs))
	}
	return ends
}

// chunkOf returns the chunk of slot i.
func (p *infoPrefetch) chunkOf(i int) int {
	return sort.SearchInts(p.ends, i+1)
}

// get waits for the msgInfo of the FETCH's message i (from base on).
func (p *infoPrefetch) get(i int) *infoSlot {
	i -= p.base
	<-p.loaded[p.chunkOf(i)]
	return &p.slots[i]
}

// done tells the workers that the writer is past message i.
func (p *infoPrefetch) done(i int) {
	if i -= p.base; i+1 == p.ends[p.chunkOf(i)] {
		select {
		case p.tokens <- struct{}{}:
		default: // every chunk is taken already
		}
	}
}

// close stops the workers and waits for them.
func (p *infoPrefetch) close() {
	close(p.stop)
	p.wg.Wait()
	p.cache.loaded()
}
