"""Calls keyward through Envoy with an official SDK and prints one JSON line.

Usage: sdk_client.py MODE   (env KW_BASE: Envoy's URL, KW_TOKEN: the API key)
MODE: openai, openai-stream, anthropic, anthropic-stream.
With KW_HOST set, the SDK calls http://KW_HOST as an application in a mesh
does (base_url http://api.openai.com/v1), and its connections go to KW_BASE
instead, as a sidecar or ztunnel takes them to the egress gateway: the
request keeps the provider's Host.
With KW_CERT, KW_KEY and KW_CA set, the SDK calls over TLS (KW_BASE is
https://), trusting KW_CA and presenting the client certificate KW_CERT
with its key KW_KEY, as a workload with a mesh identity does.
The output says what the SDK returned or which exception it raised; the Go
test asserts on it. Retries are off so a denial surfaces at once.
"""
import json
import os
import sys

import anthropic
import openai

mode = sys.argv[1]
base = os.environ["KW_BASE"]
key = os.environ["KW_TOKEN"]
host = os.environ.get("KW_HOST")
openai_base, anthropic_base, http_client = base + "/openai/v1", base + "/anthropic", None
if host:
    try:
        import httpx2 as httpx  # the HTTP client these SDK builds use
    except ImportError:
        import httpx
    gateway = httpx.URL(base)

    class ToGateway(httpx.HTTPTransport):
        """Sends every request to the gateway, Host header unchanged."""

        def handle_request(self, request):
            request.url = request.url.copy_with(scheme=gateway.scheme, host=gateway.host, port=gateway.port)
            return super().handle_request(request)

    openai_base, anthropic_base = "http://" + host + "/v1", "http://" + host
    http_client = httpx.Client(transport=ToGateway())
if os.environ.get("KW_CERT"):
    import ssl

    try:
        import httpx2 as httpx  # the HTTP client these SDK builds use
    except ImportError:
        import httpx
    tls = ssl.create_default_context(cafile=os.environ["KW_CA"])
    tls.load_cert_chain(os.environ["KW_CERT"], os.environ["KW_KEY"])
    http_client = httpx.Client(verify=tls)
out = {"mode": mode}
try:
    if mode.startswith("openai"):
        client = openai.OpenAI(base_url=openai_base, api_key=key, max_retries=0, http_client=http_client)
        messages = [{"role": "user", "content": "Say hello."}]
        if mode == "openai":
            r = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            out["text"] = r.choices[0].message.content
        else:
            chunks = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
            out["text"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        client = anthropic.Anthropic(base_url=anthropic_base, api_key=key, max_retries=0, http_client=http_client)
        messages = [{"role": "user", "content": "Say hello."}]
        if mode == "anthropic":
            r = client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages)
            out["text"] = "".join(b.text for b in r.content if b.type == "text")
        else:
            with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=messages) as s:
                out["text"] = "".join(s.text_stream)
    out["ok"] = True
except (openai.APIStatusError, anthropic.APIStatusError) as e:
    out["error"] = type(e).__name__
    out["status"] = e.status_code
    body = e.body if isinstance(e.body, dict) else {}
    err = body.get("error", body) if isinstance(body, dict) else {}
    out["code"] = err.get("code") if isinstance(err, dict) else None
    out["message"] = str(e)
except Exception as e:  # noqa: BLE001 - the test reports anything else
    out["error"] = type(e).__name__
    out["message"] = str(e)
print(json.dumps(out))
