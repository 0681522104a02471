package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/coffer/coffer/internal/config"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/store"
)

const keysUsage = `Usage:
  coffer keys generate-master
  coffer keys rotate-master [-config FILE] -master-key-file FILE
  coffer keys rotate-master [-config FILE] -master-key-env NAME

Custodial wallet secrets are encrypted with data keys that are wrapped by a
master key, which is kept outside the database: in a file (mode 0600, one key
per line, the first line being the current key) or in an environment
variable (keys separated by commas, the current key first).

generate-master prints a new random master key: 64 hex characters on one line.

rotate-master re-wraps every data key under the current (first) master key,
one row at a time while servers keep running, and reports how many secrets
each master key protects afterwards.

Rotating the master key:
  1. coffer keys generate-master
  2. put the new key as the FIRST line of the key file, keeping the old key
     on a line below it, on every machine that runs Coffer
  3. coffer keys rotate-master -master-key-file FILE
  4. once it reports every secret under the new key, delete the old key's
     line from the key file on every machine
`

// runKeys runs `coffer keys …` and returns the process exit code: 0 on
// success, 2 for a usage mistake, 1 for any other failure (including a
// rotation that left secrets under an older master key).
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "generate-master":
		err = keysGenerateMaster(args[1:], stdout, stderr)
	case "rotate-master":
		err = keysRotateMaster(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, keysUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "coffer keys: unknown subcommand %q\n\n%s", args[0], keysUsage)
		return 2
	}
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "coffer keys %s: %v\n", args[0], err)
	if errors.As(err, new(*usageError)) {
		return 2
	}
	return 1
}

// keysFlags returns a flag set whose errors print the keys usage.
func keysFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("coffer keys "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keysUsage) }
	return fs
}

// parseKeysFlags parses args, which must hold flags only.
func parseKeysFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func keysGenerateMaster(args []string, stdout, stderr io.Writer) error {
	if err := parseKeysFlags(keysFlags("generate-master", stderr), args); err != nil {
		return err
	}
	line, err := keys.GenerateMasterKey()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, line)
	fmt.Fprint(stderr, `Store this key where only the Coffer user can read it, e.g.
  (umask 077; coffer keys generate-master > /etc/coffer/master.key)
or chmod 600 the key file; Coffer refuses a key file that group or others can
read. Keep a copy offline: without the master key, custodial wallet secrets
cannot be decrypted, and their funds are lost. To rotate, put the new key as
the first line of the key file above the old one and run
coffer keys rotate-master.
`)
	return nil
}

// masterKeyFlags adds the flags naming the master key source.
func masterKeyFlags(fs *flag.FlagSet) (file, env *string) {
	file = fs.String("master-key-file", "", "file of master keys, one per line, the current key first (mode 0600)")
	env = fs.String("master-key-env", "", "environment variable of master keys, comma-separated, the current key first")
	return file, env
}

// masterKeyProvider builds the provider the flags name, or else the one
// the configuration names (custody.master_key_file or master_key_env).
func masterKeyProvider(file, env string, c config.Custody) (keys.Provider, error) {
	switch {
	case file != "" && env != "":
		return nil, &usageError{"give -master-key-file or -master-key-env, not both"}
	case file != "":
		return keys.FileProvider(file), nil
	case env != "":
		return keys.EnvProvider(env), nil
	}
	if p := configuredKeys(c); p != nil {
		return p, nil
	}
	return nil, &usageError{"-master-key-file or -master-key-env is required (or custody.master_key_file in the configuration)"}
}

func keysRotateMaster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := keysFlags("rotate-master", stderr)
	configPath := fs.String("config", os.Getenv("COFFER_CONFIG"), "configuration file (YAML)")
	file, env := masterKeyFlags(fs)
	if err := parseKeysFlags(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*configPath, os.Environ())
	if err != nil {
		return err
	}
	provider, err := masterKeyProvider(*file, *env, cfg.Custody)
	if err != nil {
		return err
	}
	// Check the keys before touching the database: a bad key file is the
	// likeliest mistake.
	current, all, err := provider.Keys(ctx)
	if err != nil {
		return err
	}
	db, err := openKeysDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	ks := keys.New(db, provider)
	n, err := ks.RotateMaster(ctx)
	if err != nil {
		return fmt.Errorf("re-wrapped %d secret(s) under master key %s before failing: %w", n, current.ID, err)
	}
	fmt.Fprintf(stdout, "re-wrapped %d secret(s) under master key %s\n", n, current.ID)

	usage, err := ks.MasterKeyUsage(ctx)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, k := range all {
		known[k.ID] = true
	}
	ids := make([]string, 0, len(usage))
	for id := range usage {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if (ids[i] == current.ID) != (ids[j] == current.ID) {
			return ids[i] == current.ID
		}
		return ids[i] < ids[j]
	})
	left := 0
	for _, id := range ids {
		note := "current"
		switch {
		case id != current.ID && known[id]:
			note = "older key"
		case id != current.ID:
			note = "NOT in the key source"
		}
		fmt.Fprintf(stdout, "master key %s: %d secret(s) (%s)\n", id, usage[id], note)
		if id != current.ID {
			left += usage[id]
		}
	}
	if left > 0 {
		return fmt.Errorf("%d secret(s) are still wrapped by other master keys (written by a server still using an older key file?); "+
			"keep the old keys, make sure every machine has the new key file, and run rotate-master again", left)
	}
	fmt.Fprintf(stdout, "every secret is under master key %s; the other keys can now be removed from the key source\n", current.ID)
	return nil
}

// openKeysDB opens the configured database and applies any pending
// migrations, as `coffer migrate` does.
func openKeysDB(ctx context.Context, cfg config.Config) (*store.DB, error) {
	db, err := store.Open(ctx, cfg.Database.DSN)
	if err != nil {
		return nil, err
	}
	if cfg.Database.MaxAttempts > 0 {
		db.MaxAttempts = cfg.Database.MaxAttempts
	}
	if _, err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}
