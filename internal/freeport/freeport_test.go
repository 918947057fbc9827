package freeport

import (
	"errors"
	"net"
	"os"
	"strconv"
	"testing"
)

func TestAddr(t *testing.T) {
	hi := ephemeralStart(func(string) ([]byte, error) { return []byte("32768\t60999\n"), nil })
	if hi != 32768 {
		t.Fatalf("ephemeralStart = %d, want 32768", hi)
	}
	for in, want := range map[string]int{"": 32768, "x 1": 32768, "20000 30000": 20000} {
		if got := ephemeralStart(func(string) ([]byte, error) { return []byte(in), nil }); got != want {
			t.Errorf("ephemeralStart(%q) = %d, want %d", in, got, want)
		}
	}
	if got := ephemeralStart(func(string) ([]byte, error) { return nil, errors.New("no /proc") }); got != 32768 {
		t.Errorf("ephemeralStart without /proc = %d", got)
	}

	start := ephemeralStart(os.ReadFile)
	for range 20 {
		addr, err := Addr(2)
		if err != nil {
			t.Fatal(err)
		}
		host, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if host != "127.0.0.1" || port < lowest || port+1 >= start {
			t.Fatalf("Addr(2) = %s: want loopback, below the ephemeral range (%d)", addr, start)
		}
		for _, pp := range []int{port, port + 1} {
			l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(pp)))
			if err != nil {
				t.Fatalf("port %d handed out but not free: %v", pp, err)
			}
			l.Close()
		}
	}
}
