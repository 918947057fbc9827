package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/manage/httpapi"
	"github.com/keyward/keyward/serve"
	"github.com/keyward/keyward/token"
)

const apiAdminSecret = "bootstrap-admin-credential-api-test-0123456789"

// The provider keys the tests store, each from another source; none may
// ever show in the CLI's output.
const (
	envKey     = "sk-from-env-0123456789abcdefghij"
	fileKey    = "sk-from-file-0123456789abcdefghi"
	stdinKey   = "sk-from-stdin-0123456789abcdefgh"
	rotatedKey = "sk-rotated-0123456789abcdefghijk"
)

// apiFixture is the real management API over a file store, on loopback,
// and the management tokens of its users.
type apiFixture struct {
	t       *testing.T
	url     string
	keyFile string
	// creds are management tokens by user name, plus the bootstrap admin
	// credential as "bootstrap".
	creds map[string]string
	// env is the environment every command sees, besides the credential.
	env map[string]string
}

func newAPIFixture(t *testing.T) *apiFixture {
	t.Helper()
	c := newCLI(t)
	c.must("provider", "set", "openai", "-kind", "openai", "-key", "k1=OPENAI_KEY")
	c.must("group", "add", "eng", "-providers", "openai")
	f := &apiFixture{t: t, creds: map[string]string{"bootstrap": apiAdminSecret}}
	for _, u := range [][]string{{"alice"}, {"bob"}, {"root", "-role", "admin"}} {
		c.must(append([]string{"user", "add", u[0], "-groups", "eng"}, u[1:]...)...)
		f.creds[u[0]] = strings.TrimSpace(c.must("mgmt-token", "create", "-user", u[0]))
	}
	getenv := func(k string) string { return c.env[k] }
	cfg, err := config.Load(c.config, getenv)
	if err != nil {
		t.Fatal(err)
	}
	st, err := serve.OpenStore(cfg, slog.New(slog.DiscardHandler), getenv)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manage.New(st.Records(), manage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := st.Records().SigningKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ring, err := token.NewKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	verifier := &token.Verifier{}
	verifier.Set(ring)
	srv, err := httpapi.New(httpapi.Options{Manager: m, Keys: verifier, AdminToken: apiAdminSecret})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv) // 127.0.0.1:0
	t.Cleanup(hs.Close)
	f.url = hs.URL
	f.keyFile = filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(f.keyFile, []byte(fileKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.env = map[string]string{mgmtURLEnv: hs.URL, "MY_KEY": envKey, "NEW_KEY": rotatedKey}
	return f
}

// api runs `keyward api args...` in process with cred as
// $KEYWARD_MGMT_TOKEN (none when empty) and stdin.
func (f *apiFixture) api(cred, stdin string, args ...string) (stdout, stderr string, err error) {
	vars := maps.Clone(f.env)
	if cred != "" {
		vars[mgmtTokenEnv] = cred
	}
	var out, errOut bytes.Buffer
	e := &env{stdout: &out, stderr: &errOut, getenv: func(k string) string { return vars[k] }}
	err = e.apiCmd(context.Background(), strings.NewReader(stdin), args)
	return out.String(), errOut.String(), err
}

// apiStep is one command of a scenario. In args and as, {v} is a value
// captured by an earlier step.
type apiStep struct {
	as    string // a user of the fixture, or {v}
	args  []string
	stdin string
	// want are in stdout, or with fail set, in stderr.
	want []string
	// fail is the start of the failure printed after "keyward api: ".
	fail string
	// capture maps a variable to a top-level string field of the answer.
	capture map[string]string
	// notice is whether the shown-once notice is printed.
	notice bool
}

func args(a ...string) []string { return a }

// TestAPI runs every resource and verb against the real server.
func TestAPI(t *testing.T) {
	f := newAPIFixture(t)
	steps := []apiStep{
		{as: "root", args: args("me"), want: []string{"{\n  \"name\": \"root\"", `"role": "admin"`}},
		{as: "alice", args: args("me"), want: []string{`"name": "alice"`, `"eng"`}},
		{as: "root", args: args("me", "-user", "alice"), want: []string{`"name": "alice"`}},
		{as: "alice", args: args("me", "-user", "bob"), fail: "GET /v1/me?user=bob: 403: admin_only: "},
		{as: "alice", args: args("users", "list"), fail: "GET /v1/users: 403: admin_only: "},

		{as: "root", args: args("users", "list"), want: []string{`"alice"`, `"bob"`, `"root"`}},
		{as: "bootstrap", args: args("users", "create", "carol", "-groups", "eng", "-role", "user"), want: []string{`"name": "carol"`, `"role": "user"`}},
		{as: "root", args: args("users", "create", "carol"), fail: "POST /v1/users: 409: conflict: "},
		{as: "root", args: args("users", "get", "carol"), want: []string{`"name": "carol"`}},
		{as: "root", args: args("users", "update", "carol", "-disabled"), want: []string{`"disabled": true`, `"eng"`}},
		{as: "root", args: args("users", "update", "carol", "-groups", "", "-disabled=false"), want: []string{`"groups": []`, `"disabled": false`}},
		{as: "root", args: args("users", "delete", "carol")},
		{as: "root", args: args("users", "get", "carol"), fail: "GET /v1/users/carol: 404: not_found: "},
		{as: "root", args: args("users", "get", "a/b"), fail: "GET /v1/users/a%2Fb: "},

		{as: "root", args: args("groups", "create", "ops", "-providers", "openai", "-models", "gpt-4o*,o3", "-disable-custom-keys", "-requests-per-minute", "30"), want: []string{`"name": "ops"`, `"gpt-4o*"`, `"disable_custom_keys": true`, `"requests_per_minute": 30`}},
		{as: "root", args: args("groups", "list"), want: []string{`"eng"`, `"ops"`}},
		{as: "root", args: args("groups", "get", "ops"), want: []string{`"o3"`}},
		{as: "root", args: args("groups", "update", "ops", "-disabled"), want: []string{`"disabled": true`, `"gpt-4o*"`, `"disable_custom_keys": true`, `"requests_per_minute": 30`}},
		{as: "root", args: args("groups", "update", "ops", "-requests-per-minute", "0"), want: []string{`"requests_per_minute": 0`, `"disabled": true`}},
		{as: "root", args: args("groups", "update", "ops", "-requests-per-minute", "-1"), fail: "PUT /v1/groups/ops: 400: invalid_request: "},
		{as: "root", args: args("groups", "delete", "ops")},
		{as: "root", args: args("groups", "get", "ops"), fail: "GET /v1/groups/ops: 404: not_found: "},

		{as: "root", args: args("providers", "list"), want: []string{`"openai"`, `"k1"`}},
		{as: "root", args: args("providers", "get", "openai"), want: []string{`"kind": "openai"`}},
		{as: "alice", args: args("providers", "list"), fail: "GET /v1/providers: 403: admin_only: "},

		{as: "alice", args: args("tokens", "create", "-group", "eng", "-name", "ci", "-ttl", "720h"), want: []string{`"token": "kw_`, `"name": "ci"`}, capture: map[string]string{"tok": "id"}, notice: true},
		{as: "alice", args: args("tokens", "list"), want: []string{`"{tok}"`, `"state": "active"`}},
		{as: "alice", args: args("tokens", "get", "{tok}"), want: []string{`"id": "{tok}"`, `"masked": "kw_`}},
		{as: "alice", args: args("tokens", "rotate", "{tok}", "-grace", "1h"), want: []string{`"token": "kw_`, `"replaces": "{tok}"`, `"old_expires"`}, capture: map[string]string{"tok2": "id"}, notice: true},
		{as: "alice", args: args("tokens", "revoke", "{tok2}")},
		{as: "alice", args: args("tokens", "get", "{tok2}"), want: []string{`"state": "revoked"`}},
		{as: "bob", args: args("tokens", "get", "{tok}"), fail: "GET /v1/tokens/{tok}: 404: not_found: "},
		{as: "root", args: args("tokens", "create", "-user", "bob", "-group", "eng", "-name", "bobs-app"), want: []string{`"token": "kw_`}, capture: map[string]string{"bobtok": "id"}, notice: true},
		{as: "root", args: args("tokens", "list", "-user", "bob"), want: []string{`"{bobtok}"`}},
		{as: "root", args: args("tokens", "get", "{bobtok}", "-user", "bob"), want: []string{`"{bobtok}"`}},
		{as: "root", args: args("tokens", "rotate", "{bobtok}", "-user", "bob"), want: []string{`"replaces": "{bobtok}"`}, notice: true},
		{as: "root", args: args("tokens", "revoke", "{bobtok}", "-user", "bob")},
		{as: "root", args: args("tokens", "list", "-user", "nobody"), fail: "GET /v1/tokens?user=nobody: 404: not_found: "},
		{as: "alice", args: args("tokens", "create", "-group", "ops", "-name", "x"), fail: "POST /v1/tokens: 400: invalid_request: "},

		{as: "alice", args: args("credentials", "create", "-name", "mine", "-provider", "openai", "-model", "gpt-4o", "-extra", `{"org":"acme"}`, "-key-env", "MY_KEY"), want: []string{`"name": "mine"`, `"key_masked": "sk-f`, `ghij"`, `"acme"`}, capture: map[string]string{"cred": "id"}},
		{as: "alice", args: args("credentials", "create", "-name", "filed", "-provider", "openai", "-key-file", f.keyFile), want: []string{`fghi"`}, capture: map[string]string{"cred2": "id"}},
		{as: "alice", args: args("credentials", "create", "-name", "piped", "-provider", "openai", "-base-url", "https://llm.example/v1"), stdin: stdinKey + "\n", want: []string{`efgh"`}, capture: map[string]string{"cred3": "id"}},
		{as: "alice", args: args("credentials", "list"), want: []string{`"{cred}"`, `"{cred2}"`, `"{cred3}"`}},
		{as: "alice", args: args("credentials", "get", "{cred}"), want: []string{`"model": "gpt-4o"`}},
		{as: "alice", args: args("credentials", "update", "{cred}", "-model", "gpt-4o-mini"), stdin: "not a key: update reads stdin only when asked", want: []string{`"model": "gpt-4o-mini"`, `"name": "mine"`, `ghij"`}},
		{as: "alice", args: args("credentials", "update", "{cred}", "-key-env", "NEW_KEY"), want: []string{`"key_masked": "sk-r`, `hijk"`}},
		{as: "alice", args: args("credentials", "update", "{cred2}", "-key-file", "-"), stdin: rotatedKey, want: []string{`hijk"`}},
		{as: "alice", args: args("credentials", "get", "{cred2}"), want: []string{`"name": "filed"`, `hijk"`}},
		{as: "alice", args: args("credentials", "delete", "{cred3}")},
		{as: "alice", args: args("credentials", "get", "{cred3}"), fail: "GET /v1/credentials/{cred3}: 404: not_found: "},
		{as: "root", args: args("credentials", "create", "-user", "bob", "-name", "bobs", "-provider", "openai", "-key-env", "MY_KEY"), capture: map[string]string{"bobcred": "id"}},
		{as: "root", args: args("credentials", "list", "-user", "bob"), want: []string{`"{bobcred}"`}},
		{as: "root", args: args("credentials", "update", "{bobcred}", "-user", "bob", "-name", "bobs2"), want: []string{`"bobs2"`}},
		{as: "root", args: args("credentials", "get", "{bobcred}", "-user", "bob"), want: []string{`"bobs2"`}},
		{as: "alice", args: args("credentials", "get", "{bobcred}"), fail: "GET /v1/credentials/{bobcred}: 404: not_found: "},
		{as: "root", args: args("credentials", "delete", "{bobcred}", "-user", "bob")},

		{as: "root", args: args("mgmt-tokens", "create", "bob"), want: []string{`"token": "kwm_`, `"user": "bob"`}, capture: map[string]string{"mid": "id", "mtok": "token"}, notice: true},
		{as: "{mtok}", args: args("me"), want: []string{`"name": "bob"`}},
		{as: "bob", args: args("mgmt-tokens", "revoke", "bob", "{mid}"), fail: "DELETE /v1/users/bob/management-tokens/{mid}: 403: admin_only: "},
		{as: "root", args: args("mgmt-tokens", "revoke", "bob", "{mid}")},
		{as: "{mtok}", args: args("me"), fail: "GET /v1/me: 401: token_revoked: "},
		{as: "kwm_not-a-real-management-token", args: args("me"), fail: "GET /v1/me: 401: "},
	}
	vars := map[string]string{}
	expand := func(s string) string {
		for k, v := range vars {
			s = strings.ReplaceAll(s, "{"+k+"}", v)
		}
		return s
	}
	secrets := []string{envKey, fileKey, stdinKey, rotatedKey, "sk-cli-test-key-000"}
	for _, st := range steps {
		argv := make([]string, len(st.args))
		for i, a := range st.args {
			argv[i] = expand(a)
		}
		cred, ok := f.creds[st.as]
		if !ok {
			cred = expand(st.as)
		}
		name := st.as + ": " + strings.Join(argv, " ")
		stdout, stderr, err := f.api(cred, st.stdin, argv...)
		for _, s := range append(secrets, cred) {
			if strings.Contains(stdout+stderr, s) || (err != nil && strings.Contains(err.Error(), s)) {
				t.Fatalf("%s: a secret shows in the output:\n%s%s", name, stdout, stderr)
			}
		}
		if st.fail != "" {
			var reported reportedError
			if !errors.As(err, &reported) || !strings.HasPrefix(stderr, "keyward api: "+expand(st.fail)) || stdout != "" {
				t.Errorf("%s: err %v, stderr %q, stdout %q; want a reported failure %q", name, err, stderr, stdout, expand(st.fail))
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v\n%s", name, err, stderr)
			continue
		}
		for _, w := range st.want {
			if !strings.Contains(stdout, expand(w)) {
				t.Errorf("%s: stdout lacks %s:\n%s", name, expand(w), stdout)
			}
		}
		if notice := strings.Contains(stderr, "shown once"); notice != st.notice {
			t.Errorf("%s: shown-once notice %v, want %v", name, notice, st.notice)
		}
		if stdout == "" {
			continue
		}
		var answer map[string]any
		if err := json.Unmarshal([]byte(stdout), &answer); err != nil || !strings.HasPrefix(stdout, "{\n  \"") {
			t.Errorf("%s: stdout is not indented JSON: %v\n%s", name, err, stdout)
		}
		for v, field := range st.capture {
			if s, _ := answer[field].(string); s != "" {
				vars[v] = s
			} else {
				t.Errorf("%s: no %q to capture in\n%s", name, field, stdout)
			}
		}
	}
}

// TestAPIUsage: usage and configuration errors name the flag, argument or
// variable, exit 2 (they are not reported failures) and send nothing.
func TestAPIUsage(t *testing.T) {
	f := &apiFixture{t: t, creds: map[string]string{}, env: map[string]string{mgmtURLEnv: unreachable(t), "EMPTY": ""}}
	cred := "kwm_usage-test-credential"
	cases := map[string]struct {
		cred  string
		args  []string
		stdin string
	}{
		mgmtTokenEnv:                 {args: args("me")},
		"unknown resource \"bogus\"": {cred: cred, args: args("bogus")},
		"unknown verb \"mint\" (list, get, create, rotate, revoke)": {cred: cred, args: args("tokens", "mint")},
		"want a verb":                         {cred: cred, args: args("users")},
		"want NAME, got 0":                    {cred: cred, args: args("users", "get")},
		"want USER ID, got 1":                 {cred: cred, args: args("mgmt-tokens", "revoke", "bob")},
		"want no arguments, got 1":            {cred: cred, args: args("users", "list", "extra")},
		`NAME ".." is not a name`:             {cred: cred, args: args("users", "get", "..")},
		"-group is required":                  {cred: cred, args: args("tokens", "create", "-name", "x")},
		"-name is required":                   {cred: cred, args: args("tokens", "create", "-group", "eng")},
		"-provider is required":               {cred: cred, args: args("credentials", "create", "-name", "x", "-key-env", "MY_KEY")},
		"-ttl \"forever\"":                    {cred: cred, args: args("tokens", "create", "-group", "eng", "-name", "x", "-ttl", "forever")},
		"-grace":                              {cred: cred, args: args("tokens", "rotate", "ID", "-grace", "soon")},
		"-extra: want a JSON object":          {cred: cred, args: args("credentials", "update", "ID", "-extra", "[1]")},
		"want a whole number":                 {cred: cred, args: args("groups", "update", "eng", "-requests-per-minute", "lots")},
		"-key-env: $EMPTY":                    {cred: cred, args: args("credentials", "create", "-name", "x", "-provider", "p", "-key-env", "EMPTY")},
		"give one key source":                 {cred: cred, args: args("credentials", "create", "-name", "x", "-provider", "p", "-key-env", "A", "-key-file", "B")},
		"-key-file: open":                     {cred: cred, args: args("credentials", "create", "-name", "x", "-provider", "p", "-key-file", "/nonexistent/key")},
		"stdin: no key":                       {cred: cred, args: args("credentials", "create", "-name", "x", "-provider", "p"), stdin: "\n"},
		"flag provided but not defined: -key": {cred: cred, args: args("credentials", "create", "-name", "x", "-provider", "p", "-key", "sk-on-argv")},
		"-url \"ftp://host\"":                 {cred: cred, args: args("-url", "ftp://host", "me")},
		"no credentials in the URL":           {cred: cred, args: args("me", "-url", "http://u:hunter2@127.0.0.1:1")},
		"-timeout":                            {cred: cred, args: args("-timeout", "0s", "me")},
	}
	for want, tc := range cases {
		stdout, stderr, err := f.api(tc.cred, tc.stdin, tc.args...)
		var reported reportedError
		switch {
		case err == nil || errors.As(err, &reported):
			t.Errorf("%v: err %v, want a usage error", tc.args, err)
		case !strings.Contains(err.Error()+stderr, want):
			t.Errorf("%v: err %v, want it to mention %q\n%s", tc.args, err, want, stderr)
		case stdout != "" || strings.Contains(err.Error()+stderr, "hunter2") || strings.Contains(err.Error()+stderr, cred):
			t.Errorf("%v: stdout %q, stderr %q, err %v", tc.args, stdout, stderr, err)
		}
	}
	// No arguments: the usage, listing every resource and verb.
	_, stderr, err := f.api(cred, "")
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr, "keyward api mgmt-tokens revoke USER ID") {
		t.Errorf("no arguments: %v\n%s", err, stderr)
	}
}

// unreachable returns a loopback URL nothing listens on.
func unreachable(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return "http://" + addr
}

// TestAPIFailures: a network error names the URL and a hostile or foreign
// answer is printed scrubbed, never with the credential or the key.
func TestAPIFailures(t *testing.T) {
	const cred = "kwm_failure-test-credential-0123"
	var gotURI, gotBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotURI = r.RequestURI
		raw, _ := io.ReadAll(r.Body)
		gotBody = string(raw)
		switch prefix, _, _ := strings.Cut(r.URL.Path[1:], "/"); prefix {
		case "echo": // an error that quotes the request back
			w.WriteHeader(http.StatusBadRequest)
			msg := "got " + r.Header.Get("Authorization") + " and " + string(raw)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "bad\x1b[31m", "message": msg}})
		case "moved":
			http.Redirect(w, r, "http://elsewhere.example/", http.StatusFound)
		default:
			http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
		}
	}))
	t.Cleanup(srv.Close)
	f := &apiFixture{t: t, env: map[string]string{mgmtURLEnv: srv.URL + "/echo/", "MY_KEY": envKey}}

	// -url may carry a path prefix; errors name the API's path.
	_, stderr, err := f.api(cred, "", "credentials", "create", "-name", "x", "-provider", "p", "-key-env", "MY_KEY", "-user", "a b&c")
	if gotURI != "/echo/v1/credentials?user=a+b%26c" || !strings.Contains(gotBody, envKey) {
		t.Fatalf("sent %s %s", gotURI, gotBody)
	}
	want := "keyward api: POST /v1/credentials?user=a+b%26c: 400: bad?[31m: got Bearer [redacted] and "
	if !strings.HasPrefix(stderr, want) || strings.Contains(stderr, envKey) || strings.Contains(stderr, cred) || !errors.As(err, new(*apiError)) {
		t.Errorf("echoed secrets:\n%s\nwant %s", stderr, want)
	}

	down := unreachable(t)
	for url, want := range map[string]string{
		srv.URL + "/moved":   "keyward api: GET /v1/users/a%2Fb: 302: redirected to http://elsewhere.example/; not followed (is -url right?)",
		srv.URL + "/gateway": "keyward api: GET /v1/users/a%2Fb: 502: Bad Gateway (not a keyward error body)",
		down:                 "keyward api: GET " + down + "/v1/users/a%2Fb: ",
	} {
		f.env[mgmtURLEnv] = url
		_, stderr, err := f.api(cred, "", "users", "get", "a/b")
		if !strings.HasPrefix(stderr, want) || strings.Contains(stderr, cred) || !errors.As(err, new(reportedError)) {
			t.Errorf("-url %s: %v\n%s\nwant %s", url, err, stderr, want)
		}
	}
}

// TestAPIVerbsCoverRoutes: `keyward api` has a verb for every route the
// management API serves, and every verb's route exists.
func TestAPIVerbsCoverRoutes(t *testing.T) {
	verbs := apiVerbs() // panics on a verb without a route
	covered := map[string]bool{}
	for _, v := range verbs {
		covered[v.route] = true
	}
	for _, rt := range httpapi.Routes() {
		if !covered[rt.Name] {
			t.Errorf("route %s (%s %s) has no keyward api verb", rt.Name, rt.Method, rt.Path)
		}
	}
}
