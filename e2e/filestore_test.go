package e2e

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyward/keyward/envoy/envoytest"
)

// TestLostStoreFile takes the file store's files away while keyward
// serves, as a crash or a bad deploy would: truncates the store file,
// then deletes the token file. Each time the tokens keep working, the
// failed load is logged and counted in keyward_store_errors_total, and
// the CLI refuses to write (loudly) and leaves the files as they were.
// Put back, the files are served again.
func TestLostStoreFile(t *testing.T) {
	metricsAddr := envoytest.FreeAddr(t)
	s := newStack(t, stackOptions{extra: "metrics: {listen: " + metricsAddr + "}\n"})
	tok := s.token("alice", "eng")
	storeErrors := func() float64 {
		_, body := get(t, "http://"+metricsAddr+"/metrics")
		return parseSamples(t, body)[`keyward_store_errors_total{store="file"}`]
	}
	files := map[string]string{
		"store":       filepath.Join(s.dir, "store.yaml"),
		"tokens":      filepath.Join(s.dir, "store.tokens.jsonl"),
		"credentials": filepath.Join(s.dir, "store.credentials.jsonl"),
		"api":         filepath.Join(s.dir, "store.api-tokens.jsonl"),
	}
	for _, tc := range []struct {
		file string
		lose func(string) error
	}{
		{"store", func(p string) error { return os.Truncate(p, 0) }},
		{"tokens", os.Remove},
	} {
		saved := readFiles(t, files)
		failed := storeErrors()
		if err := tc.lose(files[tc.file]); err != nil {
			t.Fatal(err)
		}
		// Wait for the failed load to be counted (the poll interval is
		// 200ms; the limit only guards against a hang).
		waitFor(t, 30*time.Second, func() bool { return storeErrors() > failed })
		if !strings.Contains(s.logs.String(), "store reload failed") {
			t.Errorf("%s lost: no error in keyward's log", tc.file)
		}
		if denied := s.check(tok); denied != "" {
			t.Errorf("%s lost: the token is refused: %s", tc.file, denied)
		}
		lost := readFiles(t, files)
		for _, cmd := range [][]string{{"group", "add", "ops"}, tokenCreate("alice", "eng")} {
			out, err := s.kwErr(cmd...)
			if err == nil || !strings.Contains(err.Error(), "store file lost") {
				t.Errorf("%s lost: keyward %s = %q, %v; want a failure naming the lost file", tc.file, strings.Join(cmd, " "), out, err)
			}
		}
		if now := readFiles(t, files); !maps.EqualFunc(now, lost, func(a, b string) bool { return a == b }) {
			t.Errorf("%s lost: the CLI changed the files", tc.file)
		}
		// Put back as a restore would: written aside and renamed.
		tmp := files[tc.file] + ".restore"
		writeFile(t, tmp, saved[tc.file])
		if err := os.Rename(tmp, files[tc.file]); err != nil {
			t.Fatal(err)
		}
	}
	// Both back: writes go through, and the new token is served.
	s.kw("group", "add", "ops")
	if denied := s.check(s.token("alice", "eng")); denied != "" {
		t.Errorf("a token made after the files came back is refused: %s", denied)
	}
	if denied := s.check(tok); denied != "" {
		t.Errorf("the first token is refused after the files came back: %s", denied)
	}
}

// readFiles reads each file; a missing one reads as "(missing)".
func readFiles(t *testing.T, paths map[string]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, p := range paths {
		b, err := os.ReadFile(p)
		switch {
		case os.IsNotExist(err):
			out[name] = "(missing)"
		case err != nil:
			t.Fatal(err)
		default:
			out[name] = string(b)
		}
	}
	return out
}

// check asks keyward, straight over gRPC, about tok on the openai route:
// "" when allowed, else the denial body.
func (s *stack) check(tok string) string {
	s.t.Helper()
	conn, err := grpc.NewClient(s.authz, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close()
	resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: "/", Headers: map[string]string{"authorization": "Bearer " + tok}}},
		ContextExtensions: map[string]string{"provider": "openai"},
	}})
	if err != nil {
		s.t.Fatal(err)
	}
	if resp.GetOkResponse() != nil {
		return ""
	}
	return resp.GetDeniedResponse().GetBody()
}
