package regtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
)

const btcdModule = "github.com/btcsuite/btcd"

// BuildBtcd returns the path of a btcd binary of the version go.mod pins.
// $COFFER_BTCD overrides it. Otherwise the binary is built once and cached
// under os.UserCacheDir()/coffer/btcd-<version>/; concurrent callers (parallel
// test processes) wait for one build instead of each compiling btcd.
func BuildBtcd(ctx context.Context) (string, error) {
	if p := os.Getenv("COFFER_BTCD"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("COFFER_BTCD: %w", err)
		}
		return p, nil
	}

	gomod := goEnv(ctx, "GOMOD")
	var modVersion string
	var modHasTool bool
	if gomod != "" && gomod != os.DevNull {
		modVersion, modHasTool = parseGoMod(gomod)
	}
	version := buildInfoVersion()
	if version == "" {
		// Test binaries and `go run` may carry no dependency list.
		version = modVersion
	}
	if version == "" {
		return "", errors.New("regtest: cannot tell which btcd version to build (no build info and no go.mod requiring " + btcdModule + "); set COFFER_BTCD")
	}

	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("regtest: %w", err)
	}
	dir := filepath.Join(cache, "coffer", "btcd-"+version)
	bin := filepath.Join(dir, "btcd"+exeSuffix())
	if isFile(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("regtest: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("regtest: %w", err)
	}
	defer lock.Close()
	if err := lockFile(lock); err != nil {
		return "", fmt.Errorf("regtest: locking btcd build dir: %w", err)
	}
	if isFile(bin) { // another process built it while we waited
		return bin, nil
	}

	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", fmt.Errorf("regtest: %w", err)
	}
	defer os.RemoveAll(tmp)
	var cmd *exec.Cmd
	if modHasTool && modVersion == version {
		// Inside the module: use its go.sum and module cache, no network.
		cmd = exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(tmp, "btcd"+exeSuffix()), btcdModule)
		cmd.Dir = filepath.Dir(gomod)
	} else {
		cmd = exec.CommandContext(ctx, "go", "install", btcdModule+"@"+version)
		cmd.Dir = tmp
		cmd.Env = append(os.Environ(), "GOBIN="+tmp)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("regtest: building btcd %s (%s): %w\n%s", version, strings.Join(cmd.Args, " "), err, out.String())
	}
	if err := os.Rename(filepath.Join(tmp, "btcd"+exeSuffix()), bin); err != nil {
		return "", fmt.Errorf("regtest: %w", err)
	}
	return bin, nil
}

func buildInfoVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, d := range bi.Deps {
		if d.Path != btcdModule {
			continue
		}
		if d.Replace != nil && d.Replace.Version != "" {
			return d.Replace.Version
		}
		if d.Version == "(devel)" {
			return ""
		}
		return d.Version
	}
	return ""
}

// parseGoMod finds the btcd version a go.mod requires and whether it lists
// btcd as a tool. A line scanner is enough for the two directives we need.
func parseGoMod(path string) (version string, hasTool bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	block := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "//")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if block != "" && fields[0] == ")" {
			block = ""
			continue
		}
		verb := block
		if block == "" {
			verb, fields = fields[0], fields[1:]
			if len(fields) == 1 && fields[0] == "(" {
				block = verb
				continue
			}
		}
		if len(fields) == 0 || fields[0] != btcdModule {
			continue
		}
		switch verb {
		case "require":
			if len(fields) >= 2 {
				version = fields[1]
			}
		case "tool":
			hasTool = true
		}
	}
	return version, hasTool
}

func goEnv(ctx context.Context, name string) string {
	out, err := exec.CommandContext(ctx, "go", "env", name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func exeSuffix() string {
	if runtime.GOOS == "windows" {
		return ".exe"
	}
	return ""
}
