package field_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/keyward/keyward/field"
)

func TestList(t *testing.T) {
	var l field.List
	if l.Err() != nil {
		t.Fatal("an empty list is an error")
	}
	l.Add("listen", "%q is not host:port", "nope")
	var inner field.List
	inner.Add("auth.role", "must be set")
	inner.Add("[0]", "empty")
	l.Merge("vault", inner.Err())
	l.Merge("routes[2]", errors.New("plain"))
	l.Merge("nothing", nil)

	err := l.Err()
	want := []string{"listen", "vault.auth.role", "vault[0]", "routes[2]"}
	if got := field.Paths(err); !slices.Equal(got, want) {
		t.Fatalf("paths %v, want %v", got, want)
	}
	var fe *field.Error
	if !errors.As(err, &fe) || fe.Path != "listen" || fe.Msg != `"nope" is not host:port` {
		t.Fatalf("errors.As: %+v", fe)
	}
	if got := field.All(err)[3].Error(); got != "routes[2]: plain" {
		t.Fatalf("plain error under a prefix: %q", got)
	}
}

func TestAllThroughWrapping(t *testing.T) {
	err := fmt.Errorf("config %s: %w", "x.yaml", field.Errorf("cache.size", "must not be negative"))
	if got := field.Paths(err); !slices.Equal(got, []string{"cache.size"}) {
		t.Fatalf("paths %v", got)
	}
}
