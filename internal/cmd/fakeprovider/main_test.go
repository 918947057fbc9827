package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunAnnouncesServesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	addrFile := filepath.Join(t.TempDir(), "addr")

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(runCtx, []string{"-addr-file", addrFile}, pw)
		pw.Close()
		done <- err
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("read announcement: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if !ok || !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Fatalf("announcement %q, want \"listening on 127.0.0.1:PORT\"", line)
	}
	go io.Copy(io.Discard, pr) // never block run on a later write

	fromFile, err := os.ReadFile(addrFile)
	if err != nil || strings.TrimSpace(string(fromFile)) != addr {
		t.Errorf("addr file %q (err %v), want %q", fromFile, err, addr)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/_fake/requests", nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("admin request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("admin status %d", resp.StatusCode)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("run did not return after cancel")
	}
}

func TestRunBadFlag(t *testing.T) {
	if err := run(t.Context(), []string{"-nope"}, io.Discard); err == nil {
		t.Error("run accepted an unknown flag")
	}
}
