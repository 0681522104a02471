package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/coffer/coffer/internal/auth"
	"github.com/coffer/coffer/internal/config"
	"github.com/coffer/coffer/internal/store"
)

const apikeyUsage = `Usage:
  coffer apikey create -scope read|write|admin [-label TEXT] [-config FILE]
  coffer apikey list   [-config FILE]
  coffer apikey revoke [-config FILE] ID

create prints the new key on stdout once; it cannot be shown again.
Flags may also be written with two dashes (--scope write).
`

// usageError is a command-line mistake: exit code 2, like flag errors.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErr(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// cmdAPIKey runs `coffer apikey …` and returns the process exit code: 0 on
// success, 2 for a usage mistake (unknown subcommand, bad flag or scope,
// missing ID), 1 for any other failure. Like migrate it loads the
// configuration (-config or COFFER_CONFIG, and COFFER_… variables), opens the
// database and applies pending migrations first.
func cmdAPIKey(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, apikeyUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "create":
		err = apikeyCreate(ctx, args[1:], stdout, stderr)
	case "list":
		err = apikeyList(ctx, args[1:], stdout, stderr)
	case "revoke":
		err = apikeyRevoke(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, apikeyUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "coffer apikey: unknown subcommand %q\n\n%s", args[0], apikeyUsage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(*usageError)), errors.Is(err, auth.ErrInvalid):
		fmt.Fprintf(stderr, "coffer apikey %s: %v\n", args[0], err)
		return 2
	}
	fmt.Fprintf(stderr, "coffer apikey %s: %v\n", args[0], err)
	return 1
}

// apikeyFlags is a flag set with -config, as loadConfig has, whose errors
// print the apikey usage.
func apikeyFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("coffer apikey "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, apikeyUsage) }
	path := fs.String("config", os.Getenv("COFFER_CONFIG"), "configuration file (YAML)")
	return fs, path
}

// parseArgs parses flags that may come before, between or after the
// positional arguments, and returns the positional ones. A bad flag is a
// usage error (flag has already said what is wrong).
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErr("%v", err)
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil // everything after -- is positional
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// openAPIKeyStore loads the configuration, opens the database and migrates
// it, as `coffer migrate` does.
func openAPIKeyStore(ctx context.Context, configPath string) (*store.DB, error) {
	cfg, err := config.Load(configPath, os.Environ())
	if err != nil {
		return nil, err
	}
	return openKeysDB(ctx, cfg)
}

func apikeyCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, path := apikeyFlags("create", stderr)
	scopeText := fs.String("scope", "", "the key's scope: read, write or admin (required)")
	label := fs.String("label", "", "a note saying what the key is for")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected argument %q", pos[0])
	}
	if *scopeText == "" {
		return usageErr("-scope is required: read, write or admin")
	}
	scope, err := auth.ParseScope(*scopeText)
	if err != nil {
		return usageErr("unknown scope %q: want read, write or admin", *scopeText)
	}
	if err := auth.CheckLabel(*label); err != nil {
		return err
	}
	db, err := openAPIKeyStore(ctx, *path)
	if err != nil {
		return err
	}
	defer db.Close()
	plaintext, key, err := auth.CreateAPIKey(ctx, db, scope, *label)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, plaintext)
	fmt.Fprintf(stderr, "Created API key %s with scope %s. This is the only time the key is shown: store it now; it will not be shown again.\n",
		key.ID, key.Scope)
	return nil
}

func apikeyList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, path := apikeyFlags("list", stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("unexpected argument %q", pos[0])
	}
	db, err := openAPIKeyStore(ctx, *path)
	if err != nil {
		return err
	}
	defer db.Close()
	keys, err := auth.ListAPIKeys(ctx, db)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tLABEL\tSCOPE\tCREATED\tLAST USED\tREVOKED")
	for _, k := range keys {
		label := k.Label
		if label == "" {
			label = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, label, k.Scope,
			cliTime(k.CreatedAt), cliTime(k.LastUsedAt), cliTime(k.RevokedAt))
	}
	return tw.Flush()
}

// cliTime formats a time for listings: UTC RFC 3339, "-" for none.
func cliTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func apikeyRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, path := apikeyFlags("revoke", stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("want exactly one key ID (see coffer apikey list)")
	}
	db, err := openAPIKeyStore(ctx, *path)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := auth.RevokeAPIKey(ctx, db, pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked API key %s\n", pos[0])
	return nil
}
