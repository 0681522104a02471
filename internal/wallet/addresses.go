package wallet

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/coffer/coffer/internal/chain"
	"github.com/coffer/coffer/internal/store"
)

// Address is a derived address of a wallet.
type Address struct {
	Address  string `json:"address"`
	Branch   string `json:"branch"` // "receive" or "change"
	Index    uint32 `json:"index"`
	Path     string `json:"path"` // full derivation path of the (first) key
	Used     bool   `json:"used"`
	Reserved bool   `json:"reserved"`
}

var branchNames = [2]string{"receive", "change"}

// ParseBranch reads "receive", "change" or "" (both, -1).
func ParseBranch(s string) (int, error) {
	switch s {
	case "":
		return -1, nil
	case "receive":
		return 0, nil
	case "change":
		return 1, nil
	}
	return 0, errorf(ErrInvalid, "branch must be receive or change, not %q", s)
}

// Extend implements follow.Watcher: when a tracked script of a wallet is
// paid, the wallet's window of derived addresses moves to gap_limit past it.
func (s *Service) Extend(ctx context.Context, paid [][]byte) (bool, error) {
	type key struct {
		wallet string
		branch int
	}
	used := map[key]int64{}
	for chunk := range chunks(paid, 500) {
		q := `SELECT wallet_id, branch, MAX(idx) FROM wallet_addresses WHERE script IN (` + placeholders(len(chunk), 1) + `) GROUP BY wallet_id, branch`
		rows, err := s.db.QueryContext(ctx, q, anySlice(chunk)...)
		if err != nil {
			return false, err
		}
		for rows.Next() {
			var k key
			var idx int64
			if err := rows.Scan(&k.wallet, &k.branch, &idx); err != nil {
				rows.Close()
				return false, err
			}
			used[k] = max(used[k], idx)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return false, err
		}
	}
	grew := false
	for k, idx := range used {
		more, err := s.ensureWindow(ctx, k.wallet, k.branch, idx)
		if err != nil {
			return false, err
		}
		grew = grew || more
	}
	return grew, nil
}

// ensureWindow derives and tracks addresses so that gap_limit of them follow
// index on branch. It reports whether it added any.
func (s *Service) ensureWindow(ctx context.Context, walletID string, branch int, index int64) (bool, error) {
	d, err := s.descsOf(ctx, s.db, walletID)
	if err != nil {
		return false, err
	}
	want := index + int64(d.gap)
	var have sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(idx) FROM wallet_addresses WHERE wallet_id = $1 AND branch = $2`,
		walletID, branch).Scan(&have); err != nil {
		return false, err
	}
	if have.Valid && have.Int64 >= want {
		return false, nil
	}
	if want >= 1<<31 {
		return false, fmt.Errorf("wallet %s: derivation index %d out of range", walletID, want)
	}
	addrs, err := derive(s, d, branch, uint32(have.Int64+1), uint32(want))
	if err != nil {
		return false, err
	}
	return true, s.db.InTx(ctx, func(tx *store.Tx) error { return s.insertAddresses(ctx, tx, walletID, addrs) })
}

// Addresses lists a wallet's derived addresses on branch (-1: both).
func (s *Service) Addresses(ctx context.Context, walletID string, branch int) ([]Address, error) {
	if _, err := s.Get(ctx, walletID); err != nil {
		return nil, err
	}
	d, err := s.descsOf(ctx, s.db, walletID)
	if err != nil {
		return nil, err
	}
	q := `SELECT branch, idx, address, used, reserved_at IS NOT NULL FROM wallet_addresses WHERE wallet_id = $1`
	args := []any{walletID}
	if branch >= 0 {
		q += ` AND branch = $2`
		args = append(args, branch)
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY branch, idx`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Address{}
	for rows.Next() {
		var a Address
		var b int
		if err := rows.Scan(&b, &a.Index, &a.Address, &a.Used, &a.Reserved); err != nil {
			return nil, err
		}
		a.Branch = branchNames[b]
		if a.Path, err = d.path(b, a.Index); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// path is the derivation path of the first key of the output at index.
func (d *walletDescs) path(branch int, index uint32) (string, error) {
	keys, err := d.branch[branch].Derivations(index)
	if err != nil || len(keys) == 0 {
		return "", err
	}
	return formatPath(keys[0].Path), nil
}

func formatPath(path []uint32) string {
	var b strings.Builder
	b.WriteString("m")
	for _, step := range path {
		if step >= 1<<31 {
			fmt.Fprintf(&b, "/%dh", step-1<<31)
		} else {
			fmt.Fprintf(&b, "/%d", step)
		}
	}
	return b.String()
}

// NextAddress hands out the lowest receive address that is neither used nor
// handed out before, and keeps gap_limit addresses derived past it.
// Concurrent callers get different addresses: the read and the reservation
// are one serializable transaction.
func (s *Service) NextAddress(ctx context.Context, walletID string) (*Address, error) {
	if _, err := s.Get(ctx, walletID); err != nil {
		return nil, err
	}
	d, err := s.descsOf(ctx, s.db, walletID)
	if err != nil {
		return nil, err
	}
	for {
		var a *Address
		err := s.db.InTx(ctx, func(tx *store.Tx) error {
			a = nil
			var idx uint32
			var addr string
			err := tx.QueryRowContext(ctx, `SELECT idx, address FROM wallet_addresses
				WHERE wallet_id = $1 AND branch = 0 AND NOT used AND reserved_at IS NULL ORDER BY idx LIMIT 1`, walletID).Scan(&idx, &addr)
			if err == sql.ErrNoRows {
				return nil // all derived ones are taken: derive more below
			}
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE wallet_addresses SET reserved_at = $4 WHERE wallet_id = $1 AND branch = $2 AND idx = $3`,
				walletID, 0, idx, time.Now().Unix()); err != nil {
				return err
			}
			a = &Address{Address: addr, Branch: "receive", Index: idx, Reserved: true}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if a == nil {
			var top sql.NullInt64
			if err := s.db.QueryRowContext(ctx, `SELECT MAX(idx) FROM wallet_addresses WHERE wallet_id = $1 AND branch = 0`, walletID).Scan(&top); err != nil {
				return nil, err
			}
			if _, err := s.ensureWindow(ctx, walletID, 0, top.Int64); err != nil {
				return nil, err
			}
			continue
		}
		// Keep the gap window past every address handed out, so a restore
		// from the seed still finds payments to it.
		if _, err := s.ensureWindow(ctx, walletID, 0, int64(a.Index)); err != nil {
			return nil, err
		}
		if a.Path, err = d.path(0, a.Index); err != nil {
			return nil, err
		}
		return a, nil
	}
}

// AddressCheck says whether an address belongs to a wallet.
type AddressCheck struct {
	Address string `json:"address"`
	Mine    bool   `json:"mine"`
	Branch  string `json:"branch,omitempty"`
	Index   *int64 `json:"index,omitempty"`
}

// MaxCheckAddresses bounds one check request.
const MaxCheckAddresses = 1000

// CheckAddresses tells which of addrs are among the wallet's derived
// addresses. Every address must be valid for the server's network.
func (s *Service) CheckAddresses(ctx context.Context, walletID string, addrs []string) ([]AddressCheck, error) {
	if _, err := s.Get(ctx, walletID); err != nil {
		return nil, err
	}
	switch {
	case len(addrs) == 0:
		return nil, errorf(ErrInvalid, "addresses must list at least one address")
	case len(addrs) > MaxCheckAddresses:
		return nil, errorf(ErrInvalid, "at most %d addresses per request, got %d", MaxCheckAddresses, len(addrs))
	}
	scripts := make([][]byte, len(addrs))
	for i, a := range addrs {
		script, err := s.AddressScript(a)
		if err != nil {
			return nil, err
		}
		scripts[i] = script
	}
	found := map[string]AddressCheck{}
	for chunk := range chunks(scripts, 500) {
		rows, err := s.db.QueryContext(ctx, `SELECT script, branch, idx FROM wallet_addresses WHERE wallet_id = $1 AND script IN (`+
			placeholders(len(chunk), 2)+`)`, append([]any{walletID}, anySlice(chunk)...)...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var script []byte
			var b int
			var idx int64
			if err := rows.Scan(&script, &b, &idx); err != nil {
				rows.Close()
				return nil, err
			}
			found[string(script)] = AddressCheck{Mine: true, Branch: branchNames[b], Index: &idx}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	out := make([]AddressCheck, len(addrs))
	for i, a := range addrs {
		c := found[string(scripts[i])]
		c.Address = a
		out[i] = c
	}
	return out, nil
}

// AddressScript decodes an address of the server's network, telling a
// wrong-network address from a malformed one.
func (s *Service) AddressScript(addr string) ([]byte, error) {
	script, err := s.params.AddressScript(addr)
	if err == nil {
		return script, nil
	}
	for _, p := range chain.All() {
		if p.Coin == s.params.Coin && p.Network == s.params.Network {
			continue
		}
		if _, e := p.AddressScript(addr); e == nil {
			return nil, errorf(ErrWrongNetwork, "%q is a %s address; this server runs %s", addr, p, s.params)
		}
	}
	return nil, errorf(ErrInvalidAddress, "%q is not a valid %s address", addr, s.params)
}

// AuthKeys returns the public keys that may sign a wallet-token challenge:
// the keys of receive index 0 (one per cosigner for multisig).
func (s *Service) AuthKeys(ctx context.Context, walletID string) ([][]byte, error) {
	if _, err := s.Get(ctx, walletID); err != nil {
		return nil, err
	}
	d, err := s.descsOf(ctx, s.db, walletID)
	if err != nil {
		return nil, err
	}
	keys, err := d.branch[0].Derivations(0)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = k.PubKey
	}
	return out, nil
}

// chunks splits s into pieces of at most n.
func chunks[T any](s []T, n int) func(func([]T) bool) {
	return func(yield func([]T) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}

// placeholders returns "$from, $from+1, …" for n parameters.
func placeholders(n, from int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", from+i)
	}
	return b.String()
}

func anySlice[T any](s []T) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
