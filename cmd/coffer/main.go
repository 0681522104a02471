// Command coffer is the Coffer server and its operator tools.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/coffer/coffer/internal/config"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// it comes from the module and VCS information Go embeds.
var version = ""

const usage = `coffer — wallet, custody and accounting server for Bitcoin-family coins

Usage:
  coffer serve   [-config FILE]   run the API server and chain follower
  coffer migrate [-config FILE]   apply database migrations and exit
  coffer apikey CMD [flags]       create, list or revoke operator API keys
  coffer keys CMD [flags]         generate-master, rotate-master: the custody master key
  coffer audit   [-json] [flags]  check the custodial books; exit 1 on any difference
  coffer custody CMD [flags]      import-unaccounted, rescan: repair a custodial wallet's books
  coffer demo    [-dir DIR]       run a local regtest node and Coffer on it
  coffer bench sync [flags]       time the chain follower on a built regtest chain
  coffer version                  print the version

Configuration: a YAML file (-config or COFFER_CONFIG) and COFFER_… environment
variables; see README.md.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stderr)
	case "migrate":
		err = cmdMigrate(ctx, args[1:], stdout, stderr)
	case "apikey":
		return cmdAPIKey(ctx, args[1:], stdout, stderr)
	case "keys":
		return runKeys(ctx, args[1:], stdout, stderr)
	case "audit":
		return cmdAudit(ctx, args[1:], stdout, stderr)
	case "custody":
		return cmdCustody(ctx, args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "bench":
		err = cmdBench(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "coffer", Version())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "coffer: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "coffer:", err)
		return 1
	}
	return 0
}

// Version reports the build's version.
func Version() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	v := info.Main.Version
	if v == "(devel)" {
		v = "dev"
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " (" + s.Value[:12] + ")"
		}
	}
	if v == "" {
		v = "dev"
	}
	return v
}

// loadConfig parses -config and loads the configuration.
func loadConfig(name string, args []string, stderr io.Writer) (config.Config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("COFFER_CONFIG"), "configuration file (YAML)")
	if err := fs.Parse(args); err != nil {
		return config.Config{}, fs, err
	}
	cfg, err := config.Load(*path, os.Environ())
	return cfg, fs, err
}

func newLogger(cfg config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
