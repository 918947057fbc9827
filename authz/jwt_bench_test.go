package authz

import (
	"context"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// jwtCases are the checks the JWT benchmarks compare, on a server with a
// JWT issuer configured: a keyward token as every client sends it, and a
// JWT Envoy verified, its payload as jwt_authn files it (a realistic
// one: iss, sub, aud, exp, iat, groups).
func jwtCases(tb testing.TB, f *fixture) map[string]*authv3.CheckRequest {
	md := jwtMetadata(tb, testIssuer, map[string]any{
		"iss": testIssuer, "sub": "alice", "aud": "llm-gateway", "exp": 4102444800.0, "iat": 1700000000.0,
		"groups": []any{"staff", "eng"}, "email": "alice@example.com",
	})
	return map[string]*authv3.CheckRequest{
		"token": checkRequest(chatHeaders(f.tokens["ok"]), "/v1/chat/completions", "openai"),
		"jwt":   jwtCheck(chatHeaders(testJWT), "openai", md),
	}
}

func warmJWTServer(tb testing.TB) (*Server, map[string]*authv3.CheckRequest) {
	f := newFixture(tb)
	s := f.server(tb, jwtOptions)
	cases := jwtCases(tb, f)
	for name, req := range cases {
		if resp, _ := check(tb, s, req); resp.GetOkResponse() == nil {
			tb.Fatalf("%s: denied: %v", name, resp.GetDeniedResponse().GetBody())
		}
	}
	f.records.privateAsked = nil
	return s, cases
}

// TestJWTCheckAllocations: a warm check of a verified JWT allocates
// nothing, as a token's does: the payload is read in place.
func TestJWTCheckAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	s, cases := warmJWTServer(t)
	ctx := context.Background()
	for name, req := range cases {
		if n := testing.AllocsPerRun(100, func() { s.Check(ctx, req) }); n != 0 {
			t.Errorf("%s: %v allocations per warm check, want 0", name, n)
		}
	}
}

// BenchmarkCheckJWT measures a warm allowed check by token and by JWT.
func BenchmarkCheckJWT(b *testing.B) {
	s, cases := warmJWTServer(b)
	ctx := context.Background()
	for _, name := range []string{"token", "jwt"} {
		req := cases[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Check(ctx, req)
			}
		})
	}
}

// BenchmarkCheckJWTRatio reports the cost of a JWT's warm check over a
// token's (the goal: at most 1.2), each timed over 50,000 checks, best of
// five interleaved rounds; then it measures the JWT case itself.
func BenchmarkCheckJWTRatio(b *testing.B) {
	s, cases := warmJWTServer(b)
	ctx := context.Background()
	best := map[string]float64{}
	for range 5 {
		for _, name := range []string{"token", "jwt"} {
			const n = 50000
			start := time.Now()
			for range n {
				s.Check(ctx, cases[name])
			}
			if ns := float64(time.Since(start).Nanoseconds()) / n; best[name] == 0 || ns < best[name] {
				best[name] = ns
			}
		}
	}
	ratio := best["jwt"] / best["token"]
	b.ReportAllocs()
	for b.Loop() {
		s.Check(ctx, cases["jwt"])
	}
	b.ReportMetric(ratio, "jwt/token")
}
