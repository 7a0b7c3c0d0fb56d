package backend

import (
	"reflect"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	junk, work := []string{"$Junk"}, []string{"$junk", "Work"}
	for _, c := range []struct {
		name string
		msgs []Message
		want Summary
	}{
		{"empty", nil, Summary{FirstUnseen: -1}},
		{"all seen", []Message{{UID: 3, Flags: FlagSeen}, {UID: 9, Flags: FlagSeen | FlagDeleted}},
			Summary{Messages: 2, Deleted: 1, FirstUnseen: -1, FirstUID: 3, LastUID: 9}},
		{"keywords once, case-insensitively", []Message{
			{UID: 1, Flags: FlagSeen, Keywords: junk}, {UID: 2, Keywords: junk}, {UID: 4, Flags: FlagDeleted, Keywords: work},
			{UID: 5, Flags: FlagSeen}},
			Summary{Messages: 4, Unseen: 2, Deleted: 1, FirstUnseen: 1, FirstUID: 1, LastUID: 5, Keywords: []string{"$Junk", "Work"}}},
	} {
		if got := Summarize(c.msgs); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

// TestPendingSnapshot: the summary answers at once, Messages waits for
// fill, and a fill that contradicts the summary is a bug caught at once.
func TestPendingSnapshot(t *testing.T) {
	msgs := []Message{{UID: 7}, {UID: 8, Flags: FlagSeen}}
	snap, fill := NewPendingSnapshot(1, 9, Summarize(msgs), nil)
	if snap.Len() != 2 || snap.Summary().FirstUID != 7 || snap.Counts().Unseen != 1 {
		t.Fatalf("pending: Len %d, summary %+v", snap.Len(), snap.Summary())
	}
	got := make(chan []Message)
	go func() { got <- snap.Messages() }()
	select {
	case <-got:
		t.Fatal("Messages returned before fill")
	case <-time.After(50 * time.Millisecond):
	}
	fill(msgs)
	if m := <-got; !reflect.DeepEqual(m, msgs) || snap.Find(8) != 1 {
		t.Fatalf("after fill: %+v", m)
	}
	_, fill = NewPendingSnapshot(1, 9, Summarize(msgs), nil)
	defer func() {
		if recover() == nil {
			t.Error("fill with the wrong count did not panic")
		}
	}()
	fill(msgs[:1])
}
