package webhook

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coffer/coffer/internal/store"
)

// Prefixes of ids and secrets.
const (
	EndpointIDPrefix = "whk_"
	SecretPrefix     = "whsec_"
	secretBytes      = 32 // Standard Webhooks allows 24–64
)

// Endpoint is a webhook endpoint as the API shows it.
type Endpoint struct {
	ID  string `json:"id"`
	URL string `json:"url"`
	// EventTypes filters by type: exact types, or prefixes ending in "*"
	// ("deposit.*"). Empty: every type.
	EventTypes []string `json:"event_types"`
	// WalletID, when set, keeps only the events of that wallet.
	WalletID    string `json:"wallet_id,omitempty"`
	Description string `json:"description"`
	Enabled     bool   `json:"enabled"`
	// DisabledReason says why Coffer disabled the endpoint; empty when it is
	// enabled or was disabled by hand.
	DisabledReason string `json:"disabled_reason,omitempty"`
	// FailingSince is the first failed attempt since the last success.
	FailingSince *time.Time `json:"failing_since,omitempty"`
	// Secret is the new signing secret, in the answers of Create and of an
	// Update that rotates it, and never again.
	Secret string `json:"secret,omitempty"`
	// Secrets are the secrets that sign deliveries now, newest first.
	Secrets   []SecretInfo `json:"secrets"`
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
}

// SecretInfo describes a signing secret without revealing it.
type SecretInfo struct {
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when a rotated-out secret stops signing; nil for the
	// current secret.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// EndpointRequest creates an endpoint (the body of POST /v1/webhooks).
type EndpointRequest struct {
	URL         string   `json:"url"`
	EventTypes  []string `json:"event_types,omitempty"`
	WalletID    string   `json:"wallet_id,omitempty"`
	Description string   `json:"description,omitempty"`
	Enabled     *bool    `json:"enabled,omitempty"` // default true
}

// EndpointUpdate changes an endpoint (the body of PATCH /v1/webhooks/{id}):
// nil fields are left as they are.
type EndpointUpdate struct {
	URL        *string   `json:"url,omitempty"`
	EventTypes *[]string `json:"event_types,omitempty"` // [] = every type
	// WalletID sets the wallet filter; "" removes it.
	WalletID    *string `json:"wallet_id,omitempty"`
	Description *string `json:"description,omitempty"`
	// Enabled true resumes delivery where the endpoint's queue stands (its
	// oldest pending delivery is due at once) and clears DisabledReason and
	// FailingSince.
	Enabled *bool `json:"enabled,omitempty"`
	// RotateSecret makes a new secret, returned once in Endpoint.Secret; the
	// previous ones keep signing for Config.SecretOverlap.
	RotateSecret bool `json:"rotate_secret,omitempty"`
}

const endpointCols = `id, url, event_types, COALESCE(wallet_id, ''), description, enabled, disabled_reason,
	failing_since, created_at, updated_at`

func scanEndpoint(row interface{ Scan(...any) error }) (*Endpoint, error) {
	var e Endpoint
	var types string
	var failing sql.NullInt64
	var created, updated int64
	if err := row.Scan(&e.ID, &e.URL, &types, &e.WalletID, &e.Description, &e.Enabled, &e.DisabledReason,
		&failing, &created, &updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(types), &e.EventTypes); err != nil {
		return nil, err
	}
	if e.EventTypes == nil {
		e.EventTypes = []string{}
	}
	e.FailingSince = optTime(failing)
	e.CreatedAt, e.UpdatedAt = unixTime(created), unixTime(updated)
	e.Secrets = []SecretInfo{}
	return &e, nil
}

// Create adds an endpoint with a new secret, returned once in Secret. It
// receives the events written from its creation on.
func (s *Service) Create(ctx context.Context, r EndpointRequest) (*Endpoint, error) {
	u, err := checkURL(r.URL)
	if err != nil {
		return nil, err
	}
	types, err := checkTypes(r.EventTypes)
	if err != nil {
		return nil, err
	}
	if err := checkDescription(r.Description); err != nil {
		return nil, err
	}
	enabled := r.Enabled == nil || *r.Enabled
	id := newID(EndpointIDPrefix)
	secret := newSecret()
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		if err := checkWallet(ctx, tx, r.WalletID); err != nil {
			return err
		}
		// Later events only. In one SERIALIZABLE transaction with the
		// insert, so a concurrent fan-out either sees this endpoint or
		// covered only events up to here.
		last, err := lastEventID(ctx, tx)
		if err != nil {
			return err
		}
		now := time.Now().Unix()
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_endpoints (id, url, event_types, wallet_id, description,
			enabled, after_event_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)`,
			id, u, types, nullString(r.WalletID), r.Description, enabled, last, now); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO webhook_secrets (secret, endpoint_id, created_at) VALUES ($1, $2, $3)`,
			secret, id, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	e, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	e.Secret = secret
	return e, nil
}

// Get returns an endpoint.
func (s *Service) Get(ctx context.Context, id string) (*Endpoint, error) {
	e, err := scanEndpoint(s.db.QueryRowContext(ctx, `SELECT `+endpointCols+` FROM webhook_endpoints WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(ErrNotFound, "no webhook endpoint %s", id)
	}
	if err != nil {
		return nil, err
	}
	return e, s.fillSecrets(ctx, []*Endpoint{e})
}

// List returns every endpoint, oldest first (by created_at, then id).
func (s *Service) List(ctx context.Context) ([]*Endpoint, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+endpointCols+` FROM webhook_endpoints ORDER BY created_at, id`)
	out, err := store.Collect(rows, err, scanEndpoint)
	if err != nil {
		return nil, err
	}
	return out, s.fillSecrets(ctx, out)
}

// fillSecrets sets the Secrets of es: those still signing, newest first.
func (s *Service) fillSecrets(ctx context.Context, es []*Endpoint) error {
	if len(es) == 0 {
		return nil
	}
	byID := map[string]*Endpoint{}
	for _, e := range es {
		byID[e.ID] = e
	}
	q := `SELECT endpoint_id, created_at, expires_at FROM webhook_secrets WHERE (expires_at IS NULL OR expires_at > $1)`
	args := []any{time.Now().Unix()}
	if len(es) == 1 {
		q += ` AND endpoint_id = $2`
		args = append(args, es[0].ID)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY CASE WHEN expires_at IS NULL THEN 0 ELSE 1 END, created_at DESC, expires_at DESC, secret`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var created int64
		var expires sql.NullInt64
		if err := rows.Scan(&id, &created, &expires); err != nil {
			return err
		}
		if e := byID[id]; e != nil {
			e.Secrets = append(e.Secrets, SecretInfo{CreatedAt: unixTime(created), ExpiresAt: optTime(expires)})
		}
	}
	return rows.Err()
}

// Update changes an endpoint; see EndpointUpdate. The script hook's
// command and event types come from the configuration and it has no
// secret: Update refuses to change them.
func (s *Service) Update(ctx context.Context, id string, r EndpointUpdate) (*Endpoint, error) {
	if id == ScriptEndpointID && (r.URL != nil || r.EventTypes != nil || r.RotateSecret) {
		return nil, errorf(ErrInvalid, "%s is the script hook: its command and event types are set by hooks.command and hooks.event_types in the configuration, and it has no secret; only enabled, wallet_id and description can be changed here", id)
	}
	var sets []string
	var args []any
	set := func(col string, v any) {
		args = append(args, v)
		sets = append(sets, col+" = $"+itoa(len(args)))
	}
	if r.URL != nil {
		u, err := checkURL(*r.URL)
		if err != nil {
			return nil, err
		}
		set("url", u)
	}
	if r.EventTypes != nil {
		types, err := checkTypes(*r.EventTypes)
		if err != nil {
			return nil, err
		}
		set("event_types", types)
	}
	if r.Description != nil {
		if err := checkDescription(*r.Description); err != nil {
			return nil, err
		}
		set("description", *r.Description)
	}
	if r.WalletID != nil {
		set("wallet_id", nullString(*r.WalletID))
	}
	var secret string
	if r.RotateSecret {
		secret = newSecret()
	}
	resumed := false
	err := s.db.InTx(ctx, func(tx *store.Tx) error {
		resumed = false
		var enabled bool
		err := tx.QueryRowContext(ctx, `SELECT enabled FROM webhook_endpoints WHERE id = $1`, id).Scan(&enabled)
		if errors.Is(err, sql.ErrNoRows) {
			return errorf(ErrNotFound, "no webhook endpoint %s", id)
		}
		if err != nil {
			return err
		}
		if r.WalletID != nil {
			if err := checkWallet(ctx, tx, *r.WalletID); err != nil {
				return err
			}
		}
		now := time.Now()
		sets, args := slices.Clone(sets), slices.Clone(args)
		add := func(col string, v any) {
			args = append(args, v)
			sets = append(sets, col+" = $"+itoa(len(args)))
		}
		if r.Enabled != nil {
			add("enabled", *r.Enabled)
			add("disabled_reason", "")
			if *r.Enabled && !enabled {
				resumed = true
				sets = append(sets, "failing_since = NULL")
				if err := resumeQueue(ctx, tx, id, now); err != nil {
					return err
				}
			}
		}
		add("updated_at", now.Unix())
		args = append(args, id)
		if _, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET `+strings.Join(sets, ", ")+
			` WHERE id = $`+itoa(len(args)), args...); err != nil {
			return err
		}
		if secret == "" {
			return nil
		}
		// Rotation: the current secrets sign for the overlap still (or
		// less, if they already expire sooner); rotated-out ones that no
		// longer sign are dropped.
		until := now.Add(max(s.cfg.SecretOverlap, 0)).Unix()
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_secrets WHERE endpoint_id = $1 AND expires_at <= $2`,
			id, now.Unix()); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE webhook_secrets SET expires_at = $1
			WHERE endpoint_id = $2 AND (expires_at IS NULL OR expires_at > $1)`, until, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO webhook_secrets (secret, endpoint_id, created_at) VALUES ($1, $2, $3)`,
			secret, id, now.Unix())
		return err
	})
	if err != nil {
		return nil, err
	}
	if resumed {
		s.wakeUp()
	}
	e, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	e.Secret = secret
	return e, nil
}

// Delete removes an endpoint with its secrets, deliveries and attempts log.
// An attempt in flight finishes but is not recorded. The script hook's
// endpoint (ScriptEndpointID) is not deleted: the configuration owns it.
func (s *Service) Delete(ctx context.Context, id string) error {
	if id == ScriptEndpointID {
		return errorf(ErrInvalid, "%s is the script hook: unset hooks.command in the configuration to stop it (it is then disabled and its log kept), or PATCH it {\"enabled\": false}", id)
	}
	return s.db.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_attempts WHERE delivery_id IN
			(SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE endpoint_id = $1`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_secrets WHERE endpoint_id = $1`, id); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM webhook_endpoints WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return errorf(ErrNotFound, "no webhook endpoint %s", id)
		}
		return nil
	})
}

// newSecret returns whsec_ and the base64 of 32 random bytes.
func newSecret() string {
	var b [secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// checkURL validates an endpoint URL and returns it as given, trimmed.
func checkURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", errorf(ErrInvalid, "url is required")
	}
	if len(raw) > MaxURLLength {
		return "", errorf(ErrInvalid, "url is longer than %d bytes", MaxURLLength)
	}
	if strings.ContainsAny(raw, " \t\r\n") {
		return "", errorf(ErrInvalid, "url must not contain white space")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", errorf(ErrInvalid, "url is not a valid URL")
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return "", errorf(ErrInvalid, "url must be an http:// or https:// URL")
	}
	if u.Hostname() == "" {
		return "", errorf(ErrInvalid, "url has no host")
	}
	if u.Fragment != "" {
		return "", errorf(ErrInvalid, "url must not have a #fragment")
	}
	return raw, nil
}

// checkTypes validates event type patterns and returns them as a JSON array,
// without duplicates; a lone "*" means every type, as an empty list does.
func checkTypes(types []string) (string, error) {
	if len(types) > MaxEventTypes {
		return "", errorf(ErrInvalid, "event_types may hold at most %d patterns", MaxEventTypes)
	}
	out := []string{}
	for _, p := range types {
		if !validPattern(p) {
			return "", errorf(ErrInvalid, "event_types: %q is not an event type or a prefix ending in *: use lowercase letters, digits, '.', '_' and '-', like deposit.credited or deposit.*", p)
		}
		if p == "*" {
			out = []string{}
			break
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func validPattern(p string) bool {
	if p == "" || len(p) > 100 {
		return false
	}
	body := strings.TrimSuffix(p, "*")
	for _, c := range body {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// matchType reports whether typ passes the filter patterns.
func matchType(patterns []string, typ string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(typ, prefix) {
				return true
			}
		} else if p == typ {
			return true
		}
	}
	return false
}

func checkDescription(d string) error {
	if !utf8.ValidString(d) || strings.ContainsRune(d, 0) {
		return errorf(ErrInvalid, "description must be UTF-8 text")
	}
	if utf8.RuneCountInString(d) > MaxDescription {
		return errorf(ErrInvalid, "description is longer than %d characters", MaxDescription)
	}
	return nil
}

// checkWallet refuses a wallet filter naming no registered wallet.
func checkWallet(ctx context.Context, q querier, walletID string) error {
	if walletID == "" {
		return nil
	}
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM wallets WHERE id = $1`, walletID).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return errorf(ErrInvalid, "wallet_id: no wallet %s", walletID)
	}
	return nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// resumeQueue makes an endpoint's pending deliveries due now, so a
// re-enabled endpoint resumes where its queue stands: the oldest pending
// delivery may be waiting hours for its next retry.
func resumeQueue(ctx context.Context, tx *store.Tx, endpoint string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET next_attempt_ms = $1, updated_at = $2
		WHERE endpoint_id = $3 AND status = 'pending' AND next_attempt_ms > $1`,
		now.UnixMilli(), now.Unix(), endpoint)
	return err
}

// lastEventID returns the id of the newest event, or 0, read in q (inside
// the caller's transaction, unlike events.Log.LastID).
func lastEventID(ctx context.Context, q querier) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM events`).Scan(&id)
	return id, err
}
