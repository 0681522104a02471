package webhook

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/coffer/coffer/internal/store"
)

// The script hook runs a command per event instead of POSTing it. It is an
// endpoint like the others — row ScriptEndpointID of webhook_endpoints, whose
// url column holds the command's path — so it has the same queue,
// per-endpoint order, retry schedule, leases, attempts log, automatic
// disabling and redelivery. Only the attempt differs: the command is run
// with no shell and no arguments; the event's JSON (the body a webhook
// receives) is its standard input and COFFER_EVENT_JSON; exit code 0 is
// success, anything else or running past Script.Timeout (its process group
// is then killed) a failure. An attempt's response is the start of the
// command's standard error, its status code the exit code of a failure.

// ScriptEndpointID is the id of the script hook's endpoint.
const ScriptEndpointID = "whk_script"

// DefaultScriptTimeout bounds one run of the script hook's command.
const DefaultScriptTimeout = 30 * time.Second

// MaxEnvJSON is the largest body also passed in COFFER_EVENT_JSON; a larger
// one is on standard input only (Linux refuses an environment string over
// 128 KiB).
const MaxEnvJSON = 64 << 10

// scriptOffReason is the disabled_reason of the script hook's endpoint while
// the configuration names no command.
const scriptOffReason = "hooks.command is not set in the configuration"

// Script configures the script hook.
type Script struct {
	// Command is the absolute path of the executable run per event; empty:
	// no script hook.
	Command string
	// EventTypes filters by type as an endpoint's event_types do; empty:
	// every type.
	EventTypes []string
	// Timeout bounds one run (default 30 s).
	Timeout time.Duration
}

// CheckCommand reports why path cannot be the script hook's command: it must
// be the absolute path of an executable regular file.
func CheckCommand(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("hooks.command %q must be an absolute path", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("hooks.command: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("hooks.command %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("hooks.command %s is not executable (mode %s): chmod +x it", path, fi.Mode().Perm())
	}
	return nil
}

// SyncScript makes the script hook's endpoint match Config.Script; coffer
// serve calls it at start. With a command, the endpoint is created
// (receiving the events written from then on) or updated, and enabled again
// if it was disabled only because the configuration had named no command;
// an endpoint disabled by hand or for failing too long stays disabled (it is
// re-enabled with PATCH /v1/webhooks/whk_script {"enabled": true}). With no
// command, the endpoint, if any, is disabled: nothing is queued for it and
// its pending deliveries wait; its log is kept.
func (s *Service) SyncScript(ctx context.Context) error {
	sc := s.cfg.Script
	if sc.Command == "" {
		return s.db.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $1, updated_at = $2
				WHERE id = $3 AND enabled`, scriptOffReason, time.Now().Unix(), ScriptEndpointID)
			return err
		})
	}
	if err := CheckCommand(sc.Command); err != nil {
		return err
	}
	types, err := checkTypes(sc.EventTypes)
	if err != nil {
		return fmt.Errorf("hooks.%w", err)
	}
	resumed := false
	var stillOff string
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		resumed, stillOff = false, ""
		now := time.Now()
		var enabled bool
		var reason string
		err := tx.QueryRowContext(ctx, `SELECT enabled, disabled_reason FROM webhook_endpoints WHERE id = $1`,
			ScriptEndpointID).Scan(&enabled, &reason)
		if errors.Is(err, sql.ErrNoRows) {
			last, err := lastEventID(ctx, tx)
			if err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO webhook_endpoints (id, url, event_types, description, enabled,
				after_event_id, created_at, updated_at) VALUES ($1, $2, $3, $4, TRUE, $5, $6, $6)`,
				ScriptEndpointID, sc.Command, types, "script hook (hooks.command in the configuration)", last, now.Unix())
			return err
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET url = $1, event_types = $2, updated_at = $3
			WHERE id = $4`, sc.Command, types, now.Unix(), ScriptEndpointID); err != nil {
			return err
		}
		if enabled {
			return nil
		}
		if reason != scriptOffReason {
			stillOff = reason
			if stillOff == "" {
				stillOff = "disabled by hand"
			}
			return nil
		}
		resumed = true
		if _, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET enabled = TRUE, disabled_reason = '',
			failing_since = NULL WHERE id = $1`, ScriptEndpointID); err != nil {
			return err
		}
		return resumeQueue(ctx, tx, ScriptEndpointID, now)
	})
	if err != nil {
		return err
	}
	if stillOff != "" {
		s.log.Warn("the script hook is disabled; re-enable it with PATCH /v1/webhooks/"+ScriptEndpointID+` {"enabled": true}`,
			"reason", stillOff)
	}
	if resumed {
		s.wakeUp()
	}
	return nil
}

// attemptTimeout bounds one attempt to the endpoint.
func (s *Service) attemptTimeout(endpoint string) time.Duration {
	if endpoint == ScriptEndpointID {
		return s.cfg.Script.Timeout
	}
	return s.cfg.Timeout
}

// runScript makes one attempt of the script hook: it runs the command c.url.
func (s *Service) runScript(ctx context.Context, c *claim) result {
	start := time.Now()
	r := result{at: start}
	timeout := s.cfg.Script.Timeout
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(actx, c.url)
	cmd.Stdin = bytes.NewReader(c.body)
	env := append(os.Environ(),
		"COFFER_EVENT_ID="+strconv.FormatInt(c.event, 10),
		"COFFER_EVENT_TYPE="+c.eventType,
		"COFFER_EVENT_WALLET_ID="+c.wallet,
		"COFFER_WEBHOOK_ID="+WebhookID(c.event),
	)
	if len(c.body) <= MaxEnvJSON {
		env = append(env, "COFFER_EVENT_JSON="+string(c.body))
	}
	cmd.Env = env
	stderr := &headWriter{max: MaxResponseSnippet}
	cmd.Stderr = stderr // standard output goes to /dev/null
	killGroup(cmd)
	// After the kill, or once the command has exited, do not wait long for
	// pipes a process it left behind may hold.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	r.latency = time.Since(start)
	r.response = cleanText(stderr.buf, MaxResponseSnippet)
	var ee *exec.ExitError
	switch {
	case err == nil || errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success():
		r.ok = true
	case ctx.Err() != nil:
		r.err = "cancelled: Coffer is shutting down"
	case actx.Err() != nil:
		r.err = fmt.Sprintf("timeout: the command did not finish within %s; its process group was killed", timeout)
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
		r.err = fmt.Sprintf("exit status %d", r.code)
	case errors.As(err, &ee):
		r.err = "the command ended abnormally: " + ee.Error()
	default:
		r.err = "the command could not be run: " + cleanText([]byte(err.Error()), 500)
	}
	return r
}

// headWriter keeps the first max bytes written to it and discards the rest.
type headWriter struct {
	max int
	buf []byte
}

func (w *headWriter) Write(p []byte) (int, error) {
	if n := w.max - len(w.buf); n > 0 {
		w.buf = append(w.buf, p[:min(n, len(p))]...)
	}
	return len(p), nil
}
