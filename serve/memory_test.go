package serve

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/token"
)

// activeTokens is how many distinct tokens BenchmarkActiveTokenMemory
// sends: enough that per-token costs dwarf the fixed ones.
const activeTokens = 20_000

// BenchmarkActiveTokenMemory reports the heap each active token costs once
// its records and its allowed answer are cached (B/token): what bounds the
// resident memory of a replica whose traffic spans many tokens.
func BenchmarkActiveTokenMemory(b *testing.B) {
	for _, answers := range []int{1, activeTokens} {
		b.Run(fmt.Sprintf("answers=%d", answers), func(b *testing.B) {
			f := newFixture(b, func(c *config.Config) { c.Cache.Answers = answers })
			reqs := f.addTokens(b, activeTokens)
			svc := f.service(b)
			ctx := context.Background()
			var perToken float64
			for b.Loop() {
				before := heapInUse()
				checkAll(b, ctx, svc, reqs)
				perToken = float64(heapInUse()-before) / activeTokens
				b.StopTimer()
				svc.records.Purge()
				svc.authz = nil
				svc = f.service(b)
				b.StartTimer()
			}
			b.ReportMetric(perToken, "B/token")
		})
	}
}

func checkAll(b *testing.B, ctx context.Context, svc *service, reqs []*authv3.CheckRequest) {
	for _, req := range reqs {
		if resp, _ := svc.authz.Check(ctx, req); resp.GetDeniedResponse() != nil {
			b.Fatalf("denied: %v", mustDecode(b, resp))
		}
	}
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// addTokens adds n tokens of alice's in eng to the fixture's store, and
// returns a check of each.
func (f *fixture) addTokens(t testing.TB, n int) []*authv3.CheckRequest {
	t.Helper()
	ctx := context.Background()
	st, err := filestore.Open(filestore.Options{Path: f.cfg.Store.File, Getenv: f.getenv})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := st.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := token.NewKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]*authv3.CheckRequest, 0, n)
	err = st.Update(ctx, func(d *filestore.Data) error {
		now := time.Now().UTC()
		for i := range n {
			m, err := ring.Mint()
			if err != nil {
				return err
			}
			d.Tokens.Set(m.ID, filestore.TokenData{User: "alice", Group: "eng", Name: fmt.Sprintf("t%d", i), Hash: filestore.HashString(m.Hash), Created: now})
			reqs = append(reqs, sdkRequest(m.Token))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return reqs
}

// BenchmarkCheckGRPC is an allowed check through keyward's gRPC server on
// loopback, from GOMAXPROCS*8 callers over one connection: what Envoy's
// calls cost the server, gRPC included (profile it with -cpuprofile).
// The traffic cycles through 1,000 tokens, in a process whose caches hold
// the records and answers of resident tokens in all: what a replica
// serving many tokens pays on each check.
func BenchmarkCheckGRPC(b *testing.B) {
	for _, resident := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("resident=%d", resident), func(b *testing.B) {
			f := newFixture(b)
			reqs := f.addTokens(b, resident)
			svc := f.service(b)
			checkAll(b, context.Background(), svc, reqs)
			reqs = reqs[:1000]
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			g := svc.grpcServer(nil, context.Background())
			go g.Serve(lis)
			b.Cleanup(g.Stop)
			conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			client := authv3.NewAuthorizationClient(conn)
			var next atomic.Uint64
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Check(context.Background(), reqs[next.Add(1)%uint64(len(reqs))])
					if err != nil || resp.GetOkResponse() == nil {
						b.Errorf("check: %v %v", resp, err)
						return
					}
				}
			})
		})
	}
}
