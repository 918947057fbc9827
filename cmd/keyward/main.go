// Command keyward is an Envoy ext_authz server that swaps clients' keyward
// tokens for LLM provider keys. See README.md.
//
//	keyward serve            run the ext_authz gRPC server (package serve)
//	keyward token ...        create, list, revoke tokens
//	keyward user ...         add, set, delete, list users
//	keyward group ...        add, set, delete, list groups
//	keyward provider ...     set, delete, list providers (file store)
//	keyward mgmt-token ...   issue management-API tokens
//	keyward api ...          call the management API of a running server
//	keyward envoy-config     print an Envoy bootstrap for this configuration
//	keyward version          print the version and commit (also --version)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `keyward swaps keyward tokens for LLM provider keys behind Envoy (ext_authz).

Usage:
  keyward serve        [-config FILE]
  keyward token create -user U -group G [-name N] [-expires 720h] [-principal SPIFFE_ID]
  keyward token list   [-user U]
  keyward token revoke ID
  keyward user  add|set NAME [-groups g1,g2] [-role user|admin] [-disabled=true|false]
  keyward user  delete NAME | user list
  keyward group add|set NAME [-providers p1,p2] [-models m1,m2*] [-disable-custom-keys] [-disabled]
  keyward group delete NAME | group list
  keyward provider set NAME -kind openai|anthropic|azure|gemini|custom -key ID=ENV_VAR ...
  keyward provider delete NAME | provider list
  keyward identity add NAME -principal spiffe://TD/PATH[/*] -user U -group G   mesh identity, no token
  keyward identity enable|disable|delete NAME | identity list
  keyward mgmt-token create -user U      a token for the management API (serve with management.listen)
  keyward api RESOURCE VERB ...         call the management API as $KEYWARD_MGMT_TOKEN (keyward api help)
  keyward envoy-config [-forward-body] [-authz-address HOST:PORT|unix:/PATH ...]
  keyward version                       the version and commit (also --version)

Every command but api takes -config FILE (default: $KEYWARD_CONFIG, else ./keyward.yaml
when it exists, else built-in defaults).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv); err != nil {
		var reported reportedError
		switch {
		case errors.As(err, &reported):
			os.Exit(1) // a failed request, printed by the command
		case !errors.Is(err, flag.ErrHelp):
			fmt.Fprintln(os.Stderr, "keyward:", err)
		}
		os.Exit(2)
	}
}

// env bundles the process surroundings a command runs in, so that tests run
// commands in process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	e := &env{stdout: stdout, stderr: stderr, getenv: getenv}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return e.serve(ctx, rest)
	case "token":
		return e.tokenCmd(ctx, rest)
	case "user":
		return e.userCmd(ctx, rest)
	case "group":
		return e.groupCmd(ctx, rest)
	case "provider":
		return e.providerCmd(ctx, rest)
	case "identity":
		return e.identityCmd(ctx, rest)
	case "mgmt-token":
		return e.mgmtTokenCmd(ctx, rest)
	case "api":
		return e.apiCmd(ctx, os.Stdin, rest)
	case "envoy-config":
		return e.envoyConfig(rest)
	case "version", "--version", "-version":
		if len(rest) > 0 {
			return fmt.Errorf("%s: unexpected arguments %q", cmd, rest)
		}
		printVersion(stdout)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}
