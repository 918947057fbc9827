package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/serve"
	"github.com/keyward/keyward/vault"
)

// command is a subcommand's flags plus the -config every command takes.
type command struct {
	*flag.FlagSet
	e          *env
	configPath *string
	set        map[string]bool
}

func (e *env) newCommand(name string) *command {
	fs := flag.NewFlagSet("keyward "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return &command{FlagSet: fs, e: e, configPath: fs.String("config", "", "configuration file")}
}

// parse parses flags given before or after the positional arguments, and
// returns the positional ones.
func (c *command) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := c.Parse(args); err != nil {
			return nil, err
		}
		if c.NArg() == 0 {
			break
		}
		pos = append(pos, c.Arg(0))
		args = c.Args()[1:]
	}
	c.set = map[string]bool{}
	c.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
	return pos, nil
}

// name parses args and wants exactly one positional argument.
func (c *command) name(args []string, what string) (string, error) {
	pos, err := c.parse(args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", fmt.Errorf("%s: want one %s, got %d arguments", c.Name(), what, len(pos))
	}
	return pos[0], nil
}

func (c *command) config() (*config.Config, error) {
	path := *c.configPath
	if path == "" {
		path = c.e.getenv("KEYWARD_CONFIG")
	}
	if path == "" {
		if _, err := os.Stat("keyward.yaml"); err == nil {
			path = "keyward.yaml"
		}
	}
	return config.Load(path, c.e.getenv)
}

// adminStore is what the record commands need of a store; both the file
// store and the Vault store are one.
type adminStore = manage.Store

var (
	_ adminStore = (*filestore.Store)(nil)
	_ adminStore = (*vault.Store)(nil)
)

func (c *command) store(ctx context.Context) (adminStore, error) {
	st, err := c.openStore()
	if err != nil {
		return nil, err
	}
	if err := st.Start(ctx); err != nil {
		return nil, err
	}
	return st.Records(), nil
}

// fileStore is for the commands only the file store has: in Vault, the
// security team writes provider records with Vault's own tools.
func (c *command) fileStore() (*filestore.Store, error) {
	st, err := c.openStore()
	if err != nil {
		return nil, err
	}
	fs, err := st.Files()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Name(), err)
	}
	return fs, nil
}

// openStore opens the store the configuration names, for one command.
func (c *command) openStore() (*serve.Store, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, err
	}
	return serve.OpenStore(cfg, newLogger(c.e, "warn"), c.e.getenv)
}

// list splits a comma-separated flag value; "" is the empty list.
func list(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (e *env) table(header string, rows [][]string) {
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	w.Flush()
}

func sub(args []string, usage string) (string, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return "", nil, fmt.Errorf("want a subcommand: %s", usage)
	}
	return args[0], args[1:], nil
}
