package image

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testbin"
)

// sdkResult is what e2e/testdata/sdk_client.py printed.
type sdkResult struct {
	OK     bool   `json:"ok"`
	Text   string `json:"text"`
	Error  string `json:"error"`
	Status int    `json:"status"`
	Code   string `json:"code"`
}

// sdkChat makes one chat completion with the official OpenAI SDK through
// the Envoy at base, with token as the SDK's API key: the e2e suite's own
// client script, so the image meets the same client as the e2e harness.
func sdkChat(t *testing.T, base, token string) sdkResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testbin.Python(t), "../../e2e/testdata/sdk_client.py", "openai")
	cmd.Env = append(os.Environ(), "KW_BASE="+base, "KW_TOKEN="+token)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("sdk_client.py: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("sdk_client.py: %v", err)
	}
	var r sdkResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("sdk_client.py printed %q: %v", out, err)
	}
	return r
}
