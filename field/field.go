// Package field reports configuration problems by the field they are in:
// one error type for every validator in keyward (the configuration file,
// the Vault settings, the file store's records, Envoy's options), so that
// a message always names its field the same way and callers and tests
// branch with errors.As instead of reading error text.
package field

import (
	"errors"
	"fmt"
)

// Error is one problem with one field. Path names the field as the user
// wrote it: YAML keys joined with dots, list entries by index, e.g.
// "routes[1].provider" or "vault.auth.role".
type Error struct {
	Path string
	Msg  string
}

// Error returns "path: message".
func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errorf returns the problem at path, its message formatted as by
// fmt.Sprintf.
func Errorf(path, format string, args ...any) *Error {
	return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// List collects the problems a validator finds, so that the user sees
// all of them at once. The zero value is ready to use.
type List struct {
	errs []error
}

// Add records the problem at path.
func (l *List) Add(path, format string, args ...any) {
	l.errs = append(l.errs, Errorf(path, format, args...))
}

// Merge records the problems err holds (see Prefix), each under prefix; a
// nil err adds nothing.
func (l *List) Merge(prefix string, err error) {
	if err != nil {
		l.errs = append(l.errs, Prefix(prefix, err))
	}
}

// Err returns the problems joined with errors.Join, or nil for none.
func (l *List) Err() error { return errors.Join(l.errs...) }

// Prefix puts prefix before the path of every *Error in err (a single one,
// or several joined with errors.Join), so that a part validated on its own
// ("auth.role") is reported where it sits in the whole ("vault.auth.role").
// An error that is not an *Error becomes one at prefix.
func Prefix(prefix string, err error) error {
	if err == nil || prefix == "" {
		return err
	}
	var fe *Error
	switch {
	case errors.As(err, &fe) && fe == err:
		return &Error{Path: join(prefix, fe.Path), Msg: fe.Msg}
	case isJoined(err):
		var out []error
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			out = append(out, Prefix(prefix, e))
		}
		return errors.Join(out...)
	}
	return &Error{Path: prefix, Msg: err.Error()}
}

func isJoined(err error) bool {
	_, ok := err.(interface{ Unwrap() []error })
	return ok
}

func join(prefix, path string) string {
	switch {
	case path == "":
		return prefix
	case path[0] == '[':
		return prefix + path
	}
	return prefix + "." + path
}

// All returns every *Error in err, in order: the problems a validator
// reported, for callers and tests that look at each.
func All(err error) []*Error {
	if err == nil {
		return nil
	}
	var fe *Error
	if errors.As(err, &fe) && fe == err {
		return []*Error{fe}
	}
	var out []*Error
	if isJoined(err) {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			out = append(out, All(e)...)
		}
		return out
	}
	if u := errors.Unwrap(err); u != nil {
		return All(u)
	}
	return nil
}

// Paths returns the path of every *Error in err, in order.
func Paths(err error) []string {
	var out []string
	for _, e := range All(err) {
		out = append(out, e.Path)
	}
	return out
}
