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

// fetch is one lookup of name under the check's deadline.
func fetch[V any](l *lookups, load func(context.Context, string) (V, error), name string) (V, error) {
	if l.ctx == nil {
		v, err := load(l.fromMemory, name)
		if err == nil || errors.Is(err, record.ErrNotFound) {
			return v, err
		}
		l.start()
	}
	return load(l.ctx, name)
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
