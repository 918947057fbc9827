//go:build pprof

package main

import (
	"net/http"
	_ "net/http/pprof" // the profiling endpoints, in pprof builds only
	"os"
	"time"
)

// A keyward built with -tags pprof serves net/http/pprof on
// $LOADTEST_PPROF (e.g. 127.0.0.1:6060) for profiling under load; normal
// builds have none of it.
func init() {
	if addr := os.Getenv("LOADTEST_PPROF"); addr != "" {
		go func() {
			// After the gRPC listener: the load test takes keyward's
			// first listening socket for it.
			time.Sleep(15 * time.Second)
			_ = http.ListenAndServe(addr, nil)
		}()
	}
}
