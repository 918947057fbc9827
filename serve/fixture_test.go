package serve

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
)

// openaiKey is the provider key the fixture's store serves; tests look for
// it in answers and make sure it is in no log.
const openaiKey = "sk-serve-test-key-000"

// fixture is a file store with one provider, group, user and token, and a
// configuration that serves it on loopback.
type fixture struct {
	cfg    *config.Config
	token  string
	getenv func(string) string
	// tracer, when set, traces the service's checks.
	tracer trace.Tracer
}

// newFixture writes the store; each of configure edits the configuration
// afterwards.
func newFixture(t testing.TB, configure ...func(*config.Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Store.File = filepath.Join(dir, "store.yaml")
	cfg.ShutdownDrain = 0
	env := map[string]string{"OPENAI_KEY": openaiKey}
	f := &fixture{cfg: cfg, getenv: func(k string) string { return env[k] }}
	ctx := context.Background()
	st, err := filestore.Open(filestore.Options{Path: cfg.Store.File, Getenv: f.getenv})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.PutProvider(ctx, "openai", &filestore.ProviderData{Kind: record.KindOpenAI, Keys: []filestore.KeyData{{ID: "k1", Env: "OPENAI_KEY"}}}))
	must(st.PutGroup(ctx, &record.Group{Name: "eng", Providers: []string{"openai"}}))
	must(st.PutUser(ctx, &record.User{Name: "alice", Role: record.RoleUser, Groups: []string{"eng"}}))
	must(st.EnsureSigningKey(ctx))
	m, err := manage.New(st, manage.Options{})
	must(err)
	iss, err := m.CreateToken(ctx, manage.TokenRequest{User: "alice", Group: "eng", Name: "test"})
	must(err)
	f.token = iss.Token
	for _, c := range configure {
		c(cfg)
	}
	return f
}

// service builds the whole serving path over the fixture's store: the
// file store, the record caches, the keyring, the decision and the
// responder.
func (f *fixture) service(t testing.TB) *service {
	t.Helper()
	st, err := OpenStore(f.cfg, slog.New(slog.DiscardHandler), f.getenv)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := newService(f.cfg, st, slog.New(slog.DiscardHandler), f.tracer)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.loadKeyring(context.Background()); err != nil {
		t.Fatal(err)
	}
	return svc
}

// sdkRequest is a check as Envoy sends it for an OpenAI SDK request.
func sdkRequest(tok string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: "/v1/chat/completions", Host: "127.0.0.1:10000",
			Headers: map[string]string{
				":authority": "127.0.0.1:10000", ":method": "POST", ":path": "/v1/chat/completions",
				"authorization": "Bearer " + tok, "content-type": "application/json", "user-agent": "OpenAI/Python 3.54.0",
				"accept": "application/json", "x-request-id": "6f1c2a1e-0000-4000-8000-000000000000", "x-forwarded-proto": "http",
				"x-stainless-lang": "python", "x-stainless-os": "Linux", "content-length": "96",
			},
		}},
		ContextExtensions: map[string]string{"provider": "openai"},
	}}
}

func mustDecode(t testing.TB, resp *authv3.CheckResponse) *authv3.CheckResponse {
	t.Helper()
	out, err := authz.Unpack(resp)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
