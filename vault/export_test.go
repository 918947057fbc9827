package vault

import "context"

// Poller runs the watch loop's polls one at a time, so that a test decides
// when a poll happens instead of sleeping until one may have.
type Poller struct {
	s *Store
	w watchState
}

// Poller returns a poller with the state of a freshly started Watch.
func (s *Store) Poller() *Poller { return &Poller{s: s} }

// Poll does what one tick of Watch does.
func (p *Poller) Poll(ctx context.Context, inv Invalidator, onKeys func()) {
	p.s.poll(ctx, &p.w, inv, onKeys)
}
