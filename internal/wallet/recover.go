package wallet

import (
	"context"
	"errors"
	"time"

	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/cfilter"
	"github.com/coffer/coffer/internal/follow"
	"github.com/coffer/coffer/internal/store"
)

// retryAfter is how long a wallet whose recovery failed waits for the next
// attempt; registering it again retries at once.
const retryAfter = 30 * time.Second

// runRecovery recovers the history of wallets that need it, one at a time,
// until ctx ends.
func (s *Service) runRecovery(ctx context.Context) {
	for ctx.Err() == nil {
		ids, err := s.pendingRecovery(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("wallet: listing wallets to recover failed", "err", err)
		}
		for _, id := range ids {
			err := s.recoverWallet(ctx, id)
			if err == nil || ctx.Err() != nil {
				continue
			}
			s.log.Warn("wallet: history recovery failed; will retry", "wallet", id, "err", err, "retry_in", retryAfter)
			_ = s.db.InTx(ctx, func(tx *store.Tx) error {
				_, err := tx.ExecContext(ctx, `UPDATE wallets SET status = $2, error = $3, updated_at = $4 WHERE id = $1`,
					id, StatusError, "history recovery failed: "+err.Error(), time.Now().Unix())
				return err
			})
		}
		select {
		case <-ctx.Done():
		case <-s.wakeRecovery:
		case <-time.After(time.Second):
		}
	}
}

// pendingRecovery lists wallets still recovering, and failed ones due a
// retry.
func (s *Service) pendingRecovery(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM wallets WHERE status IN ($1, $2) OR (status = $3 AND updated_at <= $4)
		ORDER BY created_at, id`, StatusCreating, StatusSyncing, StatusError, time.Now().Add(-retryAfter).Unix())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// recoverWallet scans the blocks from the wallet's last scanned height to the
// applied tip for its scripts, importing what it finds through the
// follower, until the follower is caught up with it; then the wallet is
// ready.
func (s *Service) recoverWallet(ctx context.Context, id string) error {
	var scanned int64
	if err := s.db.QueryRowContext(ctx, `SELECT scan_height FROM wallets WHERE id = $1`, id).Scan(&scanned); err != nil {
		return err
	}
	if err := s.setScan(ctx, id, StatusSyncing, scanned, -1); err != nil {
		return err
	}
	scanner := &cfilter.Scanner{Client: s.node, Params: s.params}
	if !s.cfg.FullBlocks {
		src := cfilter.New(s.node)
		if ok, err := src.Supported(ctx); err != nil {
			return err
		} else if ok {
			scanner.Filters = src
		}
	}
	for {
		tip, err := tipHeight(ctx, s.db)
		if err != nil {
			return err
		}
		if tip < 0 {
			// The follower has applied nothing yet; it will match this
			// wallet's scripts from its first block.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
				continue
			}
		}
		if scanned < tip {
			if err := s.setScan(ctx, id, StatusSyncing, scanned, tip); err != nil {
				return err
			}
			if scanned, err = s.scan(ctx, scanner, id, scanned+1, tip); err != nil {
				if errors.Is(err, follow.ErrStaleBlock) {
					continue // a reorg moved the chain under the scan: look again
				}
				return err
			}
		}
		caughtUp, err := s.follower.CaughtUp(ctx, scanned)
		if err != nil {
			return err
		}
		if caughtUp {
			return s.markReady(ctx, id, scanned)
		}
	}
}

// scan imports the wallet's transactions in heights from..to and returns the
// last height covered.
func (s *Service) scan(ctx context.Context, scanner *cfilter.Scanner, id string, from, to int64) (int64, error) {
	scripts, err := s.walletScripts(ctx, id)
	if err != nil {
		return from - 1, err
	}
	scanned := from - 1
	lastSaved := time.Now()
	_, err = scanner.Scan(ctx, from, to,
		func() [][]byte { return scripts },
		func(height int64, hash string, blk *wire.MsgBlock) error {
			n, err := s.follower.ImportBlock(ctx, height, hash, blk)
			if err != nil {
				return err
			}
			if n > 0 { // the gap window may have moved
				scripts, err = s.walletScripts(ctx, id)
			}
			return err
		},
		func(height int64) {
			scanned = height
			if time.Since(lastSaved) > time.Second {
				lastSaved = time.Now()
				if err := s.setScan(ctx, id, StatusSyncing, height, to); err != nil {
					s.log.Debug("wallet: saving scan progress failed", "wallet", id, "err", err)
				}
			}
		})
	if err != nil {
		return scanned, err
	}
	return scanned, s.setScan(ctx, id, StatusSyncing, scanned, to)
}

func (s *Service) walletScripts(ctx context.Context, id string) ([][]byte, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT script FROM wallet_addresses WHERE wallet_id = $1`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var sc []byte
		if err := rows.Scan(&sc); err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, rows.Err()
}

// setScan records recovery progress; target < 0 leaves it as it is.
func (s *Service) setScan(ctx context.Context, id, status string, scanned, target int64) error {
	return s.db.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE wallets SET status = $2, scan_height = $3,
			scan_target = CASE WHEN $4 < 0 THEN scan_target ELSE $4 END, error = '', updated_at = $5 WHERE id = $1`,
			id, status, scanned, target, time.Now().Unix())
		return err
	})
}

// markReady ends recovery: the wallet is ready, its balance is announced and
// wallet.synced says so.
func (s *Service) markReady(ctx context.Context, id string, scanned int64) error {
	return s.db.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE wallets SET status = $2, scan_height = $3, scan_target = $3, error = '', updated_at = $4
			WHERE id = $1 AND status <> $2`, id, StatusReady, scanned, time.Now().Unix())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		if err := s.announceBalance(ctx, tx, id, true); err != nil {
			return err
		}
		var count int64
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM wallet_txs WHERE wallet_id = $1`, id).Scan(&count); err != nil {
			return err
		}
		b, err := s.balance(ctx, tx, id)
		if err != nil {
			return err
		}
		_, err = s.events.Append(ctx, tx, EventWalletSynced, id, map[string]any{
			"height": scanned, "transactions": count, "balance": b.JSON()})
		return err
	})
}

// Rescan recovers a wallet's history again from height from (at least its
// birthday): the wallet goes back to syncing and the recovery loop imports
// what the follower missed. Importing a block twice is harmless.
func (s *Service) Rescan(ctx context.Context, id string, from int64) error {
	w, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if from < w.Birthday {
		from = w.Birthday
	}
	if err := s.setScan(ctx, id, StatusSyncing, from-1, -1); err != nil {
		return err
	}
	s.wake()
	return nil
}
