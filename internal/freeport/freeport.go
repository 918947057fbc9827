// Package freeport finds loopback ports for servers that tests start a
// moment later (Envoy, OpenBao), which must be told their port.
//
// The ports are taken below the kernel's range of ephemeral ports
// (net.ipv4.ip_local_port_range), from which every outgoing connection
// takes its local port: a port found free in that range, by listening on
// port 0, could be taken by any connection before the server bound it,
// and under load in CI one was (Envoy: "Address already in use"). Below
// the range only another server's explicit bind can take it.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// lowest is the lowest port handed out: well clear of the registered
// ports that local services commonly use.
const lowest = 10000

// Addr returns "127.0.0.1:PORT" with PORT and the n-1 ports after it free
// a moment ago.
func Addr(n int) (string, error) {
	hi := ephemeralStart(os.ReadFile)
	if hi-lowest < 1000 {
		return "", fmt.Errorf("find %d free ports: the ephemeral range starts at %d, leaving too few below it", n, hi)
	}
	for range 100 {
		port := lowest + rand.IntN(hi-lowest-n)
		if free(port, n) {
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
		}
	}
	return "", fmt.Errorf("find %d free ports: none in 100 tries", n)
}

// free reports whether ports port to port+n-1 could all be listened on.
func free(port, n int) bool {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for p := port; p < port+n; p++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return false
		}
		ls = append(ls, l)
	}
	return true
}

// ephemeralStart is the first port of the kernel's ephemeral range, read
// with read; Linux's default where it cannot be read.
func ephemeralStart(read func(string) ([]byte, error)) int {
	const linuxDefault = 32768
	b, err := read("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return linuxDefault
	}
	if n, err := strconv.Atoi(fields[0]); err == nil && n > 0 {
		return n
	}
	return linuxDefault
}
