package authz

import (
	"context"
	"errors"
	"time"

	"github.com/keyward/keyward/record"
)

// lookups give one check's lookups a single deadline. Each lookup first
// asks for what the records hold in memory, under a context that is
// already done; only one that would have to wait for the store is asked
// again, under the check's deadline context, which is made then and shared
// by every lookup after it. A check with warm caches so makes no context
// and reads no clock.
type lookups struct {
	parent     context.Context // the check's own
	fromMemory context.Context // already done
	deadline   time.Duration   // Options.CheckDeadline
	ctx        context.Context // the check's deadline context; nil until a lookup has had to wait
	cancel     context.CancelFunc
}

// next is the context of the next lookup: the check's deadline context
// once a lookup has had to wait, else the one that asks from memory.
func (l *lookups) next() context.Context {
	if l.ctx != nil {
		return l.ctx
	}
	return l.fromMemory
}

// again reports whether a lookup that failed with err, asked from memory,
// must be asked again under the check's deadline, which it then starts.
// A record that is gone is an answer: not again.
func (l *lookups) again(err error) bool {
	if l.ctx != nil || errors.Is(err, record.ErrNotFound) {
		return false
	}
	l.start()
	return true
}

// start makes the check's deadline context: Options.CheckDeadline from now,
// and no later than halfway to the parent's deadline.
func (l *lookups) start() {
	d := l.deadline
	if at, ok := l.parent.Deadline(); ok {
		d = min(d, time.Until(at)/2)
	}
	l.ctx, l.cancel = context.WithTimeout(l.parent, d)
}

// end releases the deadline context, if one was made.
func (l *lookups) end() {
	if l.cancel != nil {
		l.cancel()
	}
}
