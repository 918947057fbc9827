package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
)

// FuzzReadCredential: any request body gives a valid credential or a 400,
// and no answer repeats the key it was sent.
func FuzzReadCredential(f *testing.F) {
	for _, seed := range []string{
		`{"name":"mine","provider":"openai","key":"sk-0123456789abcdef"}`,
		`{"name":"m","provider":"openai","model":"gpt-4o","base_url":"https://api.openai.com/v1","key":"sk-x","extra":{"org":"o"}}`,
		`{"key":"sk-0123456789\nx-evil: 1"}`,
		`{"base_url":"https://u:sk-0123456789@example.com"}`,
		`{"extra":[1]}`, `{"name":null}`, `{"sk-0123456789abcdef":1}`, `[]`, `{`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c := &record.Credential{ID: "AAAAAAAAAAAAAAAA", User: "alice"}
		p, e := readCredential(bytes.NewReader(body))
		if e == nil {
			err := p.Apply(c)
			if err == nil {
				if err := c.Validate(); err != nil {
					t.Fatalf("accepted an invalid credential: %v", err)
				}
				return
			}
			if !errors.Is(err, manage.ErrInvalid) {
				t.Fatalf("not ErrInvalid: %v", err)
			}
			e = (&Server{}).errorFor(context.Background(), "fuzz", err)
		}
		if e.status != 400 || e.code != codeInvalidRequest || e.message == "" {
			t.Fatalf("answer %d %s %q", e.status, e.code, e.message)
		}
		var in struct{ Key string }
		if json.Unmarshal(body, &in) == nil && len(in.Key) >= 9 && strings.Contains(e.message, in.Key) {
			t.Fatalf("the message repeats the key: %q", e.message)
		}
	})
}
