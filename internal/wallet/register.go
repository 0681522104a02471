package wallet

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/coffer/coffer/internal/descriptor"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/store"
)

// Wallet statuses.
const (
	StatusCreating = "creating"
	StatusSyncing  = "syncing"
	StatusReady    = "ready"
	StatusError    = "error"
)

// Wallet is a registered watch-only wallet.
type Wallet struct {
	ID                string    `json:"id"`
	Descriptor        string    `json:"descriptor"`
	ReceiveDescriptor string    `json:"receive_descriptor"`
	ChangeDescriptor  string    `json:"change_descriptor"`
	ScriptType        string    `json:"script_type"`
	Label             string    `json:"label"`
	GapLimit          int       `json:"gap_limit"`
	Birthday          int64     `json:"birthday"` // first height scanned
	Status            string    `json:"status"`
	Progress          float64   `json:"progress"` // percent of the history scan done
	ScanHeight        int64     `json:"scan_height"`
	Error             string    `json:"error,omitempty"`
	CreatedAt         time.Time `json:"created_at"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// RegisterRequest describes a wallet: a descriptor, or an extended public
// key with a script type.
type RegisterRequest struct {
	Descriptor     string
	XPub           string
	ScriptType     string
	Label          string
	BirthdayHeight *int64
	BirthdayTime   *time.Time
	GapLimit       int
}

// MaxGapLimit bounds gap_limit: each step is two more tracked scripts.
const MaxGapLimit = 1000

// parseWallet turns the request into the wallet's receive and change
// descriptors and its canonical form.
func (s *Service) parseWallet(req RegisterRequest) (canonical string, recv, chg *descriptor.Descriptor, err error) {
	desc, xpub := strings.TrimSpace(req.Descriptor), strings.TrimSpace(req.XPub)
	switch {
	case desc != "" && xpub != "":
		return "", nil, nil, errorf(ErrInvalid, "give either descriptor or xpub, not both")
	case desc == "" && xpub == "":
		return "", nil, nil, errorf(ErrInvalid, "give a descriptor, or an xpub with a script_type")
	case xpub != "":
		recv, chg, err = descriptor.FromExtendedKey(xpub, req.ScriptType, s.params)
		if err != nil {
			return "", nil, nil, s.descriptorError("xpub", err)
		}
		return recv.String(), recv, chg, nil
	}
	if req.ScriptType != "" {
		return "", nil, nil, errorf(ErrInvalid, "script_type goes with xpub; a descriptor already names its script type")
	}
	d, err := descriptor.Parse(desc, s.params)
	if err != nil {
		return "", nil, nil, s.descriptorError("descriptor", err)
	}
	if recv, chg, err = descriptor.Pair(d); err != nil {
		return "", nil, nil, s.descriptorError("descriptor", err)
	}
	// /<0;1>/* and /0/* name the same wallet: both get the /0/* form, so
	// registering either finds the other. Other multipath pairs stay as given.
	canonical = d.String()
	if d.IsMultipath() {
		if _, c2, err := descriptor.Pair(recv); err == nil && c2.String() == chg.String() {
			canonical = recv.String()
		}
	}
	switch recv.ScriptType() {
	case descriptor.ScriptPKH, descriptor.ScriptSHWPKH, descriptor.ScriptWPKH, descriptor.ScriptTR:
	case descriptor.ScriptWSH:
		if _, _, ok := recv.Multisig(); !ok {
			return "", nil, nil, errorf(ErrInvalidDescriptor, "wsh() wallets must be wsh(multi(…)) or wsh(sortedmulti(…))")
		}
	default:
		return "", nil, nil, errorf(ErrInvalidDescriptor, "%s descriptors are not supported for wallets; use pkh, sh(wpkh), wpkh, tr or wsh(sortedmulti)", recv.ScriptType())
	}
	return canonical, recv, chg, nil
}

func (s *Service) descriptorError(field string, err error) error {
	if errors.Is(err, descriptor.ErrNetwork) {
		return errorf(ErrWrongNetwork, "%s: %v (this server runs %s)", field, err, s.params)
	}
	return errorf(ErrInvalidDescriptor, "%s: %v", field, err)
}

// walletID is the hex double-SHA256 of the canonical descriptor.
func walletID(canonical string) string {
	h := sha256.Sum256([]byte(canonical))
	h = sha256.Sum256(h[:])
	return hex.EncodeToString(h[:])
}

// Register adds a wallet, or returns the existing one when the same wallet
// was registered before (created is then false). A wallet whose recovery
// failed is retried.
func (s *Service) Register(ctx context.Context, req RegisterRequest) (w *Wallet, created bool, err error) {
	canonical, recv, chg, err := s.parseWallet(req)
	if err != nil {
		return nil, false, err
	}
	gap := req.GapLimit
	switch {
	case gap == 0:
		gap = s.cfg.DefaultGapLimit
	case gap < 1 || gap > MaxGapLimit:
		return nil, false, errorf(ErrInvalid, "gap_limit must be between 1 and %d", MaxGapLimit)
	}
	if len(req.Label) > 200 {
		return nil, false, errorf(ErrInvalid, "label is longer than 200 bytes")
	}
	birthday, err := s.birthdayHeight(ctx, req)
	if err != nil {
		return nil, false, err
	}
	id := walletID(canonical)
	descs := &walletDescs{branch: [2]*descriptor.Descriptor{recv, chg}, gap: gap}
	var addrs []derived
	for branch := range 2 {
		more, err := derive(s, descs, branch, 0, uint32(gap)-1)
		if err != nil {
			return nil, false, err
		}
		addrs = append(addrs, more...)
	}
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		var status string
		err := tx.QueryRowContext(ctx, `SELECT status FROM wallets WHERE id = $1`, id).Scan(&status)
		switch {
		case err == nil:
			created = false
			if status == StatusError {
				_, err = tx.ExecContext(ctx, `UPDATE wallets SET status = $2, error = '', updated_at = $3 WHERE id = $1`,
					id, StatusSyncing, time.Now().Unix())
			}
			return err
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		created = true
		now := time.Now().Unix()
		if _, err := tx.ExecContext(ctx, `INSERT INTO wallets (id, descriptor, receive_desc, change_desc, script_type, label,
			gap_limit, birthday, status, scan_height, scan_target, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $11)`,
			id, canonical, recv.String(), chg.String(), string(recv.ScriptType()), req.Label, gap, birthday,
			StatusCreating, birthday-1, now); err != nil {
			return err
		}
		return s.insertAddresses(ctx, tx, id, addrs)
	})
	if err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	s.descs[id] = descs
	s.mu.Unlock()
	s.wake()
	w, err = s.Get(ctx, id)
	return w, created, err
}

// birthdayHeight resolves the birthday to the height recovery starts at: a
// height as given, a time to the first block at most two hours older (block
// times may run that far ahead), nothing to the genesis block.
func (s *Service) birthdayHeight(ctx context.Context, req RegisterRequest) (int64, error) {
	switch {
	case req.BirthdayHeight != nil && req.BirthdayTime != nil:
		return 0, errorf(ErrInvalid, "give birthday as a height or a date, not both")
	case req.BirthdayHeight != nil:
		if *req.BirthdayHeight < 0 {
			return 0, errorf(ErrInvalid, "birthday height must not be negative")
		}
		return *req.BirthdayHeight, nil
	case req.BirthdayTime == nil:
		return 0, nil
	}
	target := req.BirthdayTime.Add(-2 * time.Hour).Unix()
	tip, err := s.node.GetBlockCount(ctx)
	if err != nil {
		return 0, errorf(ErrNodeUnavailable, "the node did not answer while resolving the birthday date: %v", err)
	}
	// The first height whose block time is at or after target; block times
	// are not strictly increasing, which makes this a close lower bound.
	lo, hi := int64(0), tip+1
	for lo < hi {
		mid := (lo + hi) / 2
		hash, err := s.node.GetBlockHash(ctx, mid)
		if err != nil {
			return 0, errorf(ErrNodeUnavailable, "the node did not answer while resolving the birthday date: %v", err)
		}
		hdr, err := s.node.GetBlockHeader(ctx, hash)
		if err != nil {
			return 0, errorf(ErrNodeUnavailable, "the node did not answer while resolving the birthday date: %v", err)
		}
		if hdr.Time < target {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// Get returns the wallet with id.
func (s *Service) Get(ctx context.Context, id string) (*Wallet, error) {
	ws, err := s.list(ctx, `WHERE id = $1`, id)
	if err != nil {
		return nil, err
	}
	if len(ws) == 0 {
		return nil, errorf(ErrNotFound, "no wallet with id %q", id)
	}
	return ws[0], nil
}

// List returns every wallet, oldest first.
func (s *Service) List(ctx context.Context) ([]*Wallet, error) {
	return s.list(ctx, `ORDER BY created_at, id`)
}

func (s *Service) list(ctx context.Context, where string, args ...any) ([]*Wallet, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, descriptor, receive_desc, change_desc, script_type, label, gap_limit,
		birthday, status, scan_height, scan_target, error, created_at, updated_at FROM wallets `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Wallet
	for rows.Next() {
		var w Wallet
		var target, created, updated int64
		if err := rows.Scan(&w.ID, &w.Descriptor, &w.ReceiveDescriptor, &w.ChangeDescriptor, &w.ScriptType, &w.Label,
			&w.GapLimit, &w.Birthday, &w.Status, &w.ScanHeight, &target, &w.Error, &created, &updated); err != nil {
			return nil, err
		}
		w.Progress = progress(w.Status, w.Birthday, w.ScanHeight, target)
		w.CreatedAt, w.UpdatedAt = time.Unix(created, 0).UTC(), time.Unix(updated, 0).UTC()
		out = append(out, &w)
	}
	return out, rows.Err()
}

func progress(status string, birthday, scanned, target int64) float64 {
	switch {
	case status == StatusReady:
		return 100
	case target < birthday || scanned < birthday:
		return 0
	case target == birthday:
		return 100
	}
	p := float64(scanned-birthday+1) / float64(target-birthday+1) * 100
	return float64(int(p*10)) / 10
}

// derived is one derived address.
type derived struct {
	branch int
	index  uint32
	script []byte
	addr   string
}

// derive computes addresses from..to (inclusive) on a branch.
func derive(s *Service, d *walletDescs, branch int, from, to uint32) ([]derived, error) {
	out := make([]derived, 0, to-from+1)
	for i := from; i <= to; i++ {
		script, err := d.branch[branch].Script(i)
		if err != nil {
			return nil, err
		}
		addr, ok := s.params.ScriptAddress(script)
		if !ok {
			return nil, fmt.Errorf("wallet: derived script %x has no address", script)
		}
		out = append(out, derived{branch: branch, index: i, script: script, addr: addr})
	}
	return out, nil
}

// insertAddresses stores derived addresses and tracks their scripts.
func (s *Service) insertAddresses(ctx context.Context, tx *store.Tx, walletID string, addrs []derived) error {
	if len(addrs) == 0 {
		return nil
	}
	scripts := make([][]byte, len(addrs))
	for i, a := range addrs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO wallet_addresses (wallet_id, branch, idx, script, address)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, walletID, a.branch, a.index, a.script, a.addr); err != nil {
			return err
		}
		scripts[i] = a.script
	}
	return follow.TrackScriptsTx(ctx, tx, "wallet:"+walletID, scripts...)
}
