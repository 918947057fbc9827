#!/usr/bin/env bash
# keyward's main job on the embedded file store, end to end on this machine:
# a fake LLM provider, keyward, and the real Envoy in front; one request
# with the official OpenAI SDK and a keyward token; then what the provider
# received. Everything listens on 127.0.0.1 and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/setup.sh
export PATH="$root/.tools/venv/bin:$PATH"
py="$root/.tools/venv/bin/python"

work="$root/.quickstart"
rm -rf "$work" && mkdir -p "$work/bin"
go build -o "$work/bin/keyward" ./cmd/keyward
go build -o "$work/bin/fakeprovider" ./internal/cmd/fakeprovider
kw() { "$work/bin/keyward" "$@" -config "$work/keyward.yaml"; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 200); do if eval "$1"; then return 0; fi; sleep 0.05; done; echo "timed out: $1" >&2; exit 1; }

# 1. The fake provider stands in for api.openai.com and records what it gets.
"$work/bin/fakeprovider" -listen 127.0.0.1:0 -addr-file "$work/provider.addr" >"$work/provider.log" 2>&1 &
pids+=($!)
wait_for "[ -s '$work/provider.addr' ]"
provider="http://$(cat "$work/provider.addr")"

# 2. keyward's configuration, and the provider key in a .env file.
authz=$(port) listen=$(port) admin=$(port) mgmt=$(port)
cat >"$work/keyward.yaml" <<YAML
listen: 127.0.0.1:$authz
store:
  file: keyward-store.yaml
  env_file: .env
routes:
  - provider: openai
    path_prefix: /openai/
    upstream: $provider
envoy:
  listen: 127.0.0.1:$listen
  admin: 127.0.0.1:$admin
management:
  listen: 127.0.0.1:$mgmt
YAML
echo "OPENAI_API_KEY=sk-quickstart-provider-key-0123456789" >"$work/.env"

# 3. The provider record: its key stays in .env (in Vault in production).
kw provider set openai -kind openai -key main=OPENAI_API_KEY

# 4. keyward (with its management API), then Envoy with the bootstrap
#    keyward generates.
admin_token=$("$py" -c 'import secrets; print(secrets.token_urlsafe(32))')
KEYWARD_ADMIN_TOKEN="$admin_token" "$work/bin/keyward" serve -config "$work/keyward.yaml" 2>"$work/keyward.log" &
pids+=($!)
kw envoy-config >"$work/envoy.yaml"
envoy -c "$work/envoy.yaml" --concurrency 1 -l warning --use-dynamic-base-id >"$work/envoy.log" 2>&1 &
pids+=($!)
wait_for "curl -sf http://127.0.0.1:$admin/ready >/dev/null"
wait_for "curl -s -o /dev/null http://127.0.0.1:$mgmt/v1/me"

# 5. Through the management API with keyward's CLI: the admin makes a group
#    and a user and gives her a management token; she makes her own LLM
#    token (shown once) and lists her tokens, masked.
export KEYWARD_MGMT_URL="http://127.0.0.1:$mgmt"
json() { "$py" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
echo
echo "== the management API (keyward api ...)"
KEYWARD_MGMT_TOKEN="$admin_token" "$work/bin/keyward" api groups create engineering -providers openai >/dev/null
KEYWARD_MGMT_TOKEN="$admin_token" "$work/bin/keyward" api users create alice -groups engineering >/dev/null
alice=$(KEYWARD_MGMT_TOKEN="$admin_token" "$work/bin/keyward" api mgmt-tokens create alice 2>/dev/null | json token)
echo "admin: created group engineering, user alice and her management token ${alice:0:8}..."
token=$(KEYWARD_MGMT_TOKEN="$alice" "$work/bin/keyward" api tokens create -group engineering -name quickstart 2>/dev/null | json token)
echo "alice: created her LLM token for the quickstart: ${token:0:8}..."
echo "alice: keyward api tokens list ->"
KEYWARD_MGMT_TOKEN="$alice" "$work/bin/keyward" api tokens list | "$py" -c '
import json, sys
for t in json.load(sys.stdin)["tokens"]:
    print("  ", t["name"], t["group"], t["state"], t["masked"])'

# 6. One request with the official OpenAI SDK, the keyward token as api_key.
echo
echo "== the client: openai.OpenAI(base_url='http://127.0.0.1:$listen/openai/v1', api_key=<keyward token>)"
KW_BASE="http://127.0.0.1:$listen/openai/v1" KW_TOKEN="$token" "$py" - <<'PY'
import os, openai
client = openai.OpenAI(base_url=os.environ["KW_BASE"], api_key=os.environ["KW_TOKEN"], max_retries=0)
r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello."}])
print("reply:", r.choices[0].message.content)
try:
    openai.OpenAI(base_url=os.environ["KW_BASE"], api_key="kw_not-a-real-token", max_retries=0).models.list()
except openai.AuthenticationError as e:
    print("and with a bad token:", e.status_code, e.body.get("code") if isinstance(e.body, dict) else e.body)
PY

# 7. What the provider received: the provider key in place of the token.
echo
echo "== what the provider received"
curl -s "$provider/_fake/requests" | KW_TOKEN="$token" "$py" -c '
import json, os, sys
key = open(os.path.join(sys.argv[1], ".env")).read().split("=", 1)[1].strip()
token = os.environ["KW_TOKEN"]
for r in json.load(sys.stdin):
    print(r["method"], r["path"])
    for name, values in sorted(r["header"].items()):
        for v in values:
            if key in v:
                v = v.replace(key, "<OPENAI_API_KEY from .env>")
            if name.lower() in ("authorization", "x-api-key") or name.lower().startswith("x-keyward"):
                print(f"  {name}: {v}")
    seen = token[3:] in json.dumps(r)
    print("  the client token reached the provider:", "YES (bug!)" if seen else "no")
' "$work"
echo
echo "keyward's audit log: $work/keyward.log   store: $work/keyward-store.yaml"
echo "the management API's routes: mgmt/openapi.yaml"
