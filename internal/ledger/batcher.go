package ledger

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/mempool"
	"github.com/btcsuite/btcd/wire"
	"github.com/coffer/coffer/internal/amount"
	"github.com/coffer/coffer/internal/keys"
	"github.com/coffer/coffer/internal/store"
	"github.com/coffer/coffer/internal/txbuild"
	"github.com/coffer/coffer/internal/wallet"
)

// maxFeeRate bounds fee rates (sat/vB) to catch unit mistakes.
const maxFeeRate = 10_000

// Batch statuses.
const (
	BatchSigned    = "signed" // journaled, not yet accepted by the node
	BatchBroadcast = "broadcast"
	BatchConfirmed = "confirmed"
	BatchFailed    = "failed"
)

// Batch is one on-chain transaction paying many withdrawals.
type Batch struct {
	ID            string     `json:"id"`
	WalletID      string     `json:"wallet_id"`
	Status        string     `json:"status"`
	Txid          string     `json:"txid"` // the current version
	Fee           int64      `json:"fee"`
	FeeRate       int64      `json:"fee_rate"` // sat/vB
	Versions      []string   `json:"txids"`    // every version signed, oldest first
	ConfirmedTxid *string    `json:"confirmed_txid"`
	Error         string     `json:"error,omitempty"`
	BroadcastAt   *time.Time `json:"broadcast_at"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

// GetBatch returns a batch.
func (s *Service) GetBatch(ctx context.Context, id string) (*Batch, error) {
	b := &Batch{ID: id}
	var confirmed sql.NullString
	var broadcast sql.NullInt64
	var created, updated int64
	err := s.db.QueryRowContext(ctx, `SELECT wallet_id, status, txid, fee, fee_rate, confirmed_txid, error, broadcast_at, created_at, updated_at
		FROM custody_batches WHERE id = $1`, id).Scan(&b.WalletID, &b.Status, &b.Txid, &b.Fee, &b.FeeRate, &confirmed, &b.Error,
		&broadcast, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errorf(ErrNotFound, "no batch %s", id)
	}
	if err != nil {
		return nil, err
	}
	if confirmed.Valid {
		b.ConfirmedTxid = &confirmed.String
	}
	if broadcast.Valid {
		t := unixTime(broadcast.Int64)
		b.BroadcastAt = &t
	}
	b.CreatedAt, b.UpdatedAt = unixTime(created), unixTime(updated)
	rows, err := s.db.QueryContext(ctx, `SELECT txid FROM custody_batch_txs WHERE batch_id = $1 ORDER BY created_at, fee`, id)
	if b.Versions, err = store.Collect(rows, err, scanString); err != nil {
		return nil, err
	}
	return b, nil
}

// scanString reads a row of one text column.
func scanString(row interface{ Scan(...any) error }) (string, error) {
	var v string
	err := row.Scan(&v)
	return v, err
}

// Run pays queued withdrawals until ctx ends: every BatchInterval, and as
// soon as the queue reaches BatchMaxCount or BatchMaxSum. It first
// rebroadcasts every journaled batch, so a crash between journaling and
// broadcasting is finished, never repeated.
func (s *Service) Run(ctx context.Context) {
	if err := s.releaseOrphanProposals(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("ledger: releasing proposals of batches never journaled failed; they expire on their own", "err", err)
	}
	tick := time.NewTicker(s.cfg.BatchInterval)
	defer tick.Stop()
	full := true
	for {
		if err := s.Tick(ctx, full); err != nil && ctx.Err() == nil {
			s.log.Error("ledger: paying withdrawals failed; retrying at the next tick", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			full = true
		case <-s.wakeBatcher:
			full = false
		}
	}
}

// releaseOrphanProposals cancels open proposals of custodial wallets that no
// batch journaled: a process stopped between selecting a batch's inputs and
// journaling it left them reserving hot-wallet outputs. Only the batcher
// makes proposals for custodial wallets, and only one batcher runs, so at
// start every such proposal is an orphan.
func (s *Service) releaseOrphanProposals(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT p.wallet_id, p.id FROM wallet_proposals p
		JOIN custody_wallets c ON c.id = p.wallet_id
		WHERE p.status = 'open' AND NOT EXISTS (SELECT 1 FROM custody_batches b WHERE b.proposal_id = p.id)`)
	type orphan struct{ wallet, id string }
	orphans, err := store.Collect(rows, err, func(row interface{ Scan(...any) error }) (orphan, error) {
		var o orphan
		err := row.Scan(&o.wallet, &o.id)
		return o, err
	})
	if err != nil {
		return err
	}
	for _, o := range orphans {
		if _, err := s.wallets.CancelProposal(ctx, o.wallet, o.id); err != nil {
			return err
		}
		s.log.Info("ledger: released the inputs of a batch that was never journaled", "wallet", o.wallet, "proposal", o.id)
	}
	return nil
}

// Tick does one round of the batcher: rebroadcast journaled batches, bump
// stuck ones, and for each wallet pay batches when full is set (until the
// queue is empty or the hot wallet runs short) or while the queue is at a
// trigger.
func (s *Service) Tick(ctx context.Context, full bool) error {
	if err := s.rebroadcast(ctx); err != nil {
		return err
	}
	if s.cfg.BumpAfter > 0 {
		if err := s.bumpStuck(ctx); err != nil {
			return err
		}
	}
	ids, err := s.walletIDs(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		// One wallet failing does not keep the others from being paid.
		errs = append(errs, s.payWallet(ctx, id, full))
	}
	return errors.Join(errs...)
}

// maxBatchesPerTick bounds the batches one tick makes for one wallet.
const maxBatchesPerTick = 100

// payWallet pays a wallet's queue in batches of up to BatchMaxCount: more
// batches while each one is full (the queue holds more) and, unless full,
// the queue is still at a trigger. Withdrawals queued while it runs wait
// for the next tick once a batch comes out short.
func (s *Service) payWallet(ctx context.Context, walletID string, full bool) error {
	for range maxBatchesPerTick {
		if !full {
			due, err := s.triggered(ctx, walletID)
			if err != nil || !due {
				return err
			}
		}
		_, n, err := s.payBatch(ctx, walletID)
		if err != nil || n < s.cfg.BatchMaxCount {
			return err
		}
	}
	return nil
}

// triggered reports whether a wallet's queue reached a count or sum trigger.
func (s *Service) triggered(ctx context.Context, walletID string) (bool, error) {
	var n int
	var sum sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), SUM(amount) FROM withdrawals WHERE status = 'queued' AND wallet_id = $1`,
		walletID).Scan(&n, &sum); err != nil {
		return false, err
	}
	return n >= s.cfg.BatchMaxCount || (s.cfg.BatchMaxSum > 0 && sum.Int64 >= int64(s.cfg.BatchMaxSum)), nil
}

// PayBatch pays up to BatchMaxCount of a wallet's queued withdrawals, oldest
// first, in one transaction: select inputs, sign, journal, broadcast. When
// the hot wallet cannot fund them all it pays as many of the oldest as it
// can, and raises an alert when it cannot pay even the oldest. Withdrawals
// of an account a reversed deposit took below zero wait (queued) until it
// is back above zero or they are cancelled. It returns the batch, or nil
// when nothing was paid.
func (s *Service) PayBatch(ctx context.Context, walletID string) (*Batch, error) {
	b, _, err := s.payBatch(ctx, walletID)
	return b, err
}

// payBatch is PayBatch, also saying how many withdrawals the batch pays.
func (s *Service) payBatch(ctx context.Context, walletID string) (*Batch, int, error) {
	for attempt := 1; ; attempt++ {
		b, n, err := s.payBatchOnce(ctx, walletID)
		if errors.Is(err, errStaleBatch) && attempt < 5 {
			continue // a withdrawal was cancelled meanwhile: build it again
		}
		return b, n, err
	}
}

// errStaleBatch means a withdrawal picked for a batch changed (it was
// cancelled) before the batch was journaled; nothing was journaled.
var errStaleBatch = errors.New("ledger: a withdrawal changed while its batch was built")

func (s *Service) payBatchOnce(ctx context.Context, walletID string) (*Batch, int, error) {
	queued, err := s.payable(ctx, walletID)
	if err != nil || len(queued) == 0 {
		return nil, 0, err
	}
	s.setBatching(queued, true)
	defer s.setBatching(queued, false)
	exclude, err := s.unspendable(ctx, walletID)
	if err != nil {
		return nil, 0, err
	}
	for n := len(queued); n > 0; n /= 2 {
		ws := queued[:n]
		crashPoint("batching")
		prop, err := s.wallets.Propose(ctx, walletID, s.proposalRequest(ws, exclude))
		if errors.Is(err, wallet.ErrInsufficientFunds) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		s.shortMu.Lock()
		delete(s.shortAlerted, walletID)
		s.shortMu.Unlock()
		b, err := s.signAndSend(ctx, walletID, ws, prop)
		if err != nil {
			return nil, 0, err
		}
		return b, len(ws), nil
	}
	// Alert once per oldest withdrawal, not at every tick while the hot
	// wallet waits for coins (change of an unconfirmed batch, say).
	s.shortMu.Lock()
	seen := s.shortAlerted[walletID] == queued[0].ID
	s.shortAlerted[walletID] = queued[0].ID
	s.shortMu.Unlock()
	if seen {
		return nil, 0, nil
	}
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		return s.alert(ctx, tx, walletID, "hot_wallet_short",
			fmt.Sprintf("the hot wallet cannot fund the oldest queued withdrawal %s of %s sat with confirmed coins; it stays queued", queued[0].ID, queued[0].Amount), nil)
	})
	return nil, 0, err
}

// setBatching marks withdrawals as being built into a batch, or no more.
func (s *Service) setBatching(ws []*Withdrawal, on bool) {
	s.batchingMu.Lock()
	defer s.batchingMu.Unlock()
	for _, w := range ws {
		if on {
			s.batching[w.ID] = true
		} else {
			delete(s.batching, w.ID)
		}
	}
}

func (s *Service) isBatching(id string) bool {
	s.batchingMu.Lock()
	defer s.batchingMu.Unlock()
	return s.batching[id]
}

// payable lists up to BatchMaxCount queued withdrawals of the wallet, oldest
// first, leaving out those of accounts below zero.
func (s *Service) payable(ctx context.Context, walletID string) ([]*Withdrawal, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+prefixCols("w", withdrawalCols)+` FROM withdrawals w JOIN ledger_accounts a ON a.id = w.account_id
		WHERE w.wallet_id = $1 AND w.status = 'queued' AND a.balance - a.held >= 0
		ORDER BY w.created_at, w.id LIMIT $2`, walletID, s.cfg.BatchMaxCount)
	return store.Collect(rows, err, scanWithdrawal)
}

// unspendable lists the hot wallet's outputs a batch must not spend:
// deposits not yet credited (a reorg could take them away), and the inputs
// of every journaled batch not yet confirmed. The node may not hold such a
// batch (never accepted, or forgotten by a restart) and its proposal's
// reservation may have expired, but the batch is rebroadcast until it
// confirms: a second transaction spending its inputs would conflict with it.
func (s *Service) unspendable(ctx context.Context, walletID string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT txid, vout FROM deposits WHERE wallet_id = $1 AND status = 'pending'`, walletID)
	out, err := store.Collect(rows, err, func(row interface{ Scan(...any) error }) (string, error) {
		var txid string
		var vout int64
		err := row.Scan(&txid, &vout)
		return fmt.Sprintf("%s:%d", txid, vout), err
	})
	if err != nil {
		return nil, err
	}
	raws, err := s.db.QueryContext(ctx, `SELECT id, raw FROM custody_batches WHERE wallet_id = $1 AND status IN ('signed', 'broadcast')`, walletID)
	if err != nil {
		return nil, err
	}
	defer raws.Close()
	for raws.Next() {
		var id string
		var raw []byte
		if err := raws.Scan(&id, &raw); err != nil {
			return nil, err
		}
		var msg wire.MsgTx
		if err := msg.Deserialize(bytes.NewReader(raw)); err != nil {
			return nil, fmt.Errorf("ledger: batch %s: journaled transaction unreadable: %w", id, err)
		}
		for _, in := range msg.TxIn {
			out = append(out, in.PreviousOutPoint.String())
		}
	}
	return out, raws.Err()
}

// proposalRequest asks the wallet for a transaction paying ws at the fee of
// their most urgent priority.
func (s *Service) proposalRequest(ws []*Withdrawal, exclude []string) wallet.ProposalRequest {
	target := s.cfg.FeeConfTarget["low"]
	req := wallet.ProposalRequest{Exclude: exclude}
	for _, w := range ws {
		target = min(target, s.cfg.FeeConfTarget[w.Priority])
		req.Outputs = append(req.Outputs, wallet.PaymentRequest{Address: w.Address, Amount: w.Amount})
	}
	req.ConfTarget = target
	return req
}

// signAndSend signs the proposal, journals it with the withdrawals it pays
// and their postings, then broadcasts it.
func (s *Service) signAndSend(ctx context.Context, walletID string, ws []*Withdrawal, prop *wallet.Proposal) (*Batch, error) {
	packet, err := txbuild.DecodePSBT(prop.PSBT)
	if err != nil {
		return nil, err
	}
	final, err := s.sign(ctx, walletID, packet)
	if err != nil {
		return nil, s.abandon(ctx, walletID, prop.ID, err)
	}
	batchID := newID("bat_")
	err = s.aloneTx(ctx, func(tx *store.Tx) error {
		return s.journal(ctx, tx, batchID, walletID, ws, prop, final)
	})
	if err != nil {
		return nil, s.abandon(ctx, walletID, prop.ID, err)
	}
	crashPoint("journaled")
	if err := s.broadcastBatch(ctx, batchID, final); err != nil {
		s.log.Warn("ledger: broadcasting a journaled batch failed; it is retried at the next tick", "batch", batchID, "err", err)
	}
	return s.GetBatch(ctx, batchID)
}

// abandon cancels a proposal that will not be journaled and returns err.
func (s *Service) abandon(ctx context.Context, walletID, proposalID string, err error) error {
	if _, cerr := s.wallets.CancelProposal(ctx, walletID, proposalID); cerr != nil {
		s.log.Warn("ledger: releasing a proposal's inputs failed; it expires on its own", "proposal", proposalID, "err", cerr)
	}
	return err
}

// sign signs packet with the wallet's key and returns the final transaction.
func (s *Service) sign(ctx context.Context, walletID string, packet *psbt.Packet) (*wire.MsgTx, error) {
	key, fp, err := s.signingKey(ctx, walletID)
	if err != nil {
		return nil, err
	}
	defer key.Zero()
	if _, err := keys.SignPSBT(packet, key, fp); err != nil {
		return nil, err
	}
	return psbt.Extract(packet)
}

// journal records a signed batch before it is broadcast: the transaction,
// the withdrawals it pays (signed, their funds moved to in-flight) and the
// customer fees. A withdrawal cancelled meanwhile aborts it.
func (s *Service) journal(ctx context.Context, tx *store.Tx, batchID, walletID string, ws []*Withdrawal, prop *wallet.Proposal, final *wire.MsgTx) error {
	sys, err := s.systemAccounts(ctx, tx, walletID)
	if err != nil {
		return err
	}
	raw, err := serialize(final)
	if err != nil {
		return err
	}
	txid := final.TxHash().String()
	now := time.Now().Unix()
	if _, err := tx.ExecContext(ctx, `INSERT INTO custody_batches (id, wallet_id, status, txid, raw, psbt, fee, fee_rate, proposal_id, created_at, updated_at)
		VALUES ($1, $2, 'signed', $3, $4, $5, $6, $7, $8, $9, $9)`,
		batchID, walletID, txid, raw, prop.PSBT, int64(prop.Fee), prop.FeeRate, prop.ID, now); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO custody_batch_txs (txid, batch_id, fee, created_at) VALUES ($1, $2, $3, $4)`,
		txid, batchID, int64(prop.Fee), now); err != nil {
		return err
	}
	var legs []leg
	var total int64
	taken := map[int]bool{}
	curs := make([]*Withdrawal, 0, len(ws))
	for _, w := range ws {
		cur, err := getWithdrawal(ctx, tx, w.ID)
		if err != nil {
			return err
		}
		if cur.Status != WithdrawalQueued {
			return fmt.Errorf("%w: %s is %s", errStaleBatch, w.ID, cur.Status)
		}
		vout, err := s.outputFor(final, taken, w)
		if err != nil {
			return err
		}
		cur.BatchID, cur.Txid, cur.Vout = &batchID, &txid, &vout
		held := int64(cur.Amount + cur.Fee)
		if s.cfg.CustomerPaysNetworkFee {
			// Held: the withdrawal fee plus the largest share; charged:
			// the withdrawal fee plus this withdrawal's share.
			maxShare := int64(s.cfg.MaxNetworkFeeShare)
			share := min(feeShare(int64(prop.Fee), len(ws), len(curs)), maxShare)
			cur.Fee = amount.Amount(max(0, int64(cur.Fee)-maxShare) + share)
		}
		curs = append(curs, cur)
		gross := int64(cur.Amount + cur.Fee)
		legs = append(legs, leg{account: cur.AccountID, amount: -gross, release: held})
		if cur.Fee > 0 {
			legs = append(legs, leg{account: sys.Fees, amount: int64(cur.Fee)})
		}
		total += int64(cur.Amount)
	}
	legs = append(legs, leg{account: sys.Inflight, amount: total})
	// Accounts first, events last: the event log's lock is then never
	// held while waiting for an account row (see post).
	if _, err = s.post(ctx, tx, postOpts{kind: TransferWithdrawal, ref: batchID}, legs); err != nil {
		return err
	}
	for _, cur := range curs {
		if err := s.setWithdrawalStatus(ctx, tx, cur, WithdrawalSigned, EventWithdrawalSigned); err != nil {
			return err
		}
	}
	return nil
}

// feeShare is withdrawal i's share of a batch fee split evenly over n: the
// first fee mod n withdrawals pay one satoshi more, so the shares sum to fee.
func feeShare(fee int64, n, i int) int64 {
	share := fee / int64(n)
	if int64(i) < fee%int64(n) {
		share++
	}
	return share
}

// outputFor finds the output of final paying w that no other withdrawal
// of the batch took yet (two identical payments take distinct outputs).
func (s *Service) outputFor(final *wire.MsgTx, taken map[int]bool, w *Withdrawal) (uint32, error) {
	script, err := s.params.AddressScript(w.Address)
	if err != nil {
		return 0, err
	}
	for i, o := range final.TxOut {
		if !taken[i] && o.Value == int64(w.Amount) && bytes.Equal(o.PkScript, script) {
			taken[i] = true
			return uint32(i), nil
		}
	}
	return 0, fmt.Errorf("ledger: the batch transaction has no output paying withdrawal %s", w.ID)
}

// broadcastBatch sends the batch's current transaction and records it.
func (s *Service) broadcastBatch(ctx context.Context, batchID string, final *wire.MsgTx) error {
	bErr := s.wallets.Broadcast(ctx, final)
	if bErr == nil {
		crashPoint("broadcast")
	}
	now := time.Now().Unix()
	if bErr != nil {
		// Keep it journaled: it is sent again at the next tick. Say why once.
		return errors.Join(bErr, s.db.InTx(ctx, func(tx *store.Tx) error {
			var prev, walletID string
			if err := tx.QueryRowContext(ctx, `SELECT error, wallet_id FROM custody_batches WHERE id = $1`, batchID).Scan(&prev, &walletID); err != nil {
				return err
			}
			if prev == bErr.Error() {
				return nil
			}
			if _, err := tx.ExecContext(ctx, `UPDATE custody_batches SET error = $2, updated_at = $3 WHERE id = $1`, batchID, bErr.Error(), now); err != nil {
				return err
			}
			return s.alert(ctx, tx, walletID, "batch_not_broadcast", "batch "+batchID+" could not be broadcast: "+bErr.Error(),
				map[string]any{"batch_id": batchID})
		}))
	}
	var proposal string
	sent := false // this call moved the batch from signed to broadcast
	err := s.aloneTx(ctx, func(tx *store.Tx) error {
		var status string
		sent = false
		if err := tx.QueryRowContext(ctx, `SELECT status, proposal_id FROM custody_batches WHERE id = $1`, batchID).Scan(&status, &proposal); err != nil {
			return err
		}
		if status != BatchSigned {
			return nil
		}
		sent = true
		if _, err := tx.ExecContext(ctx, `UPDATE custody_batches SET status = 'broadcast', error = '', broadcast_at = $2, updated_at = $2
			WHERE id = $1`, batchID, now); err != nil {
			return err
		}
		ws, err := s.batchWithdrawals(ctx, tx, batchID)
		if err != nil {
			return err
		}
		for _, w := range ws {
			if w.Status != WithdrawalSigned {
				continue
			}
			if err := s.setWithdrawalStatus(ctx, tx, w, WithdrawalBroadcast, EventWithdrawalBroadcast); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || !sent {
		return err
	}
	return s.wallets.MarkProposalSent(ctx, proposal, final.TxHash().String())
}

// batchWithdrawals loads the withdrawals a batch pays.
func (s *Service) batchWithdrawals(ctx context.Context, q querier, batchID string) ([]*Withdrawal, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+withdrawalCols+` FROM withdrawals WHERE batch_id = $1 ORDER BY vout`, batchID)
	return store.Collect(rows, err, scanWithdrawal)
}

// rebroadcast sends every journaled batch the node has not accepted yet, and
// every broadcast one the follower no longer sees in the mempool or a block
// (a node restart empties its mempool). Sending the journaled transaction
// again is harmless; batches the follower sees are left alone, so a resend
// never races with the block confirming them.
func (s *Service) rebroadcast(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT b.id, b.raw FROM custody_batches b LEFT JOIN txs t ON t.txid = b.txid
		WHERE b.status = 'signed' OR (b.status = 'broadcast' AND (t.status IS NULL OR t.status NOT IN ('mempool', 'confirmed')))
		ORDER BY b.created_at`)
	type pending struct {
		id  string
		raw []byte
	}
	ps, err := store.Collect(rows, err, func(row interface{ Scan(...any) error }) (pending, error) {
		var p pending
		err := row.Scan(&p.id, &p.raw)
		return p, err
	})
	if err != nil {
		return err
	}
	for _, p := range ps {
		var msg wire.MsgTx
		if err := msg.Deserialize(bytes.NewReader(p.raw)); err != nil {
			return fmt.Errorf("ledger: batch %s: journaled transaction unreadable: %w", p.id, err)
		}
		if err := s.broadcastBatch(ctx, p.id, &msg); err != nil {
			s.log.Warn("ledger: rebroadcasting a batch failed", "batch", p.id, "err", err)
		}
	}
	return nil
}

// batchTxChanged settles a batch whose transaction confirmed, unsettles one
// a reorg took out of its block, and fails one whose every version was
// double-spent. It runs in the follower's transaction.
func (s *Service) batchTxChanged(ctx context.Context, tx *store.Tx, txid string) error {
	var batchID string
	var fee int64
	err := tx.QueryRowContext(ctx, `SELECT batch_id, fee FROM custody_batch_txs WHERE txid = $1`, txid).Scan(&batchID, &fee)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	var walletID, status string
	var confirmed sql.NullString
	if err := tx.QueryRowContext(ctx, `SELECT wallet_id, status, confirmed_txid FROM custody_batches WHERE id = $1`, batchID).
		Scan(&walletID, &status, &confirmed); err != nil {
		return err
	}
	var txStatus string
	if err := tx.QueryRowContext(ctx, `SELECT status FROM txs WHERE txid = $1`, txid).Scan(&txStatus); err != nil {
		return err
	}
	sys, err := s.systemAccounts(ctx, tx, walletID)
	if err != nil {
		return err
	}
	ws, err := s.batchWithdrawals(ctx, tx, batchID)
	if err != nil {
		return err
	}
	var total int64
	for _, w := range ws {
		total += int64(w.Amount)
	}
	now := time.Now().Unix()
	switch {
	case txStatus == "confirmed" && status != BatchConfirmed && status != BatchFailed:
		// Holdings fall by what the outputs pay plus the fee.
		out, err := checkedAdd(total, fee)
		if err != nil {
			return err
		}
		if _, err := s.post(ctx, tx, postOpts{kind: TransferSettlement, ref: batchID}, []leg{
			{account: sys.Inflight, amount: -total}, {account: sys.Hot, amount: out}, {account: sys.Fees, amount: -fee}}); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE custody_batches SET status = 'confirmed', confirmed_txid = $2, txid = $2, fee = $3, updated_at = $4
			WHERE id = $1`, batchID, txid, fee, now); err != nil {
			return err
		}
		for _, w := range ws {
			w.Txid = &txid
			if err := s.setWithdrawalStatus(ctx, tx, w, WithdrawalConfirmed, EventWithdrawalConfirmed); err != nil {
				return err
			}
		}
	case txStatus != "confirmed" && status == BatchConfirmed && confirmed.String == txid:
		// A reorg took the batch out of its block: undo the settlement.
		out, err := checkedAdd(total, fee)
		if err != nil {
			return err
		}
		if _, err := s.post(ctx, tx, postOpts{kind: TransferUnsettle, ref: batchID}, []leg{
			{account: sys.Inflight, amount: total}, {account: sys.Hot, amount: -out}, {account: sys.Fees, amount: fee}}); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE custody_batches SET status = 'broadcast', confirmed_txid = NULL, updated_at = $2
			WHERE id = $1`, batchID, now); err != nil {
			return err
		}
		for _, w := range ws {
			if err := s.setWithdrawalStatus(ctx, tx, w, WithdrawalBroadcast, EventWithdrawalBroadcast); err != nil {
				return err
			}
		}
	case txStatus == "conflicted" && status != BatchConfirmed && status != BatchFailed:
		var live int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM custody_batch_txs b JOIN txs t ON t.txid = b.txid
			WHERE b.batch_id = $1 AND t.status IN ('mempool', 'confirmed')`, batchID).Scan(&live); err != nil {
			return err
		}
		if live > 0 {
			return nil
		}
		// Failing returns the funds to the customers: do it only on proof
		// that the payments cannot happen, a confirmed transaction that is
		// no version of the batch spending one of its inputs.
		var foreign int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM tx_spends mine
			JOIN tx_spends other ON other.prev_txid = mine.prev_txid AND other.prev_vout = mine.prev_vout
			JOIN txs t ON t.txid = other.txid AND t.status = 'confirmed'
			WHERE mine.txid = $1 AND other.txid NOT IN (SELECT txid FROM custody_batch_txs WHERE batch_id = $2)`,
			txid, batchID).Scan(&foreign); err != nil {
			return err
		}
		if foreign == 0 {
			return s.alert(ctx, tx, walletID, "batch_conflicted_unproven",
				"batch "+batchID+"'s transaction "+txid+" is reported conflicted, but no confirmed transaction is known to spend its inputs; it is left as it is: check it on the node",
				map[string]any{"batch_id": batchID, "txid": txid})
		}
		return s.failBatch(ctx, tx, batchID, walletID, sys, ws, "a transaction not made by Coffer spent the batch's inputs")
	}
	return nil
}

// failBatch returns a batch's withdrawals to their accounts.
func (s *Service) failBatch(ctx context.Context, tx *store.Tx, batchID, walletID string, sys SystemAccounts, ws []*Withdrawal, reason string) error {
	var legs []leg
	var total int64
	for _, w := range ws {
		legs = append(legs, leg{account: w.AccountID, amount: int64(w.Amount + w.Fee)})
		if w.Fee > 0 {
			legs = append(legs, leg{account: sys.Fees, amount: -int64(w.Fee)})
		}
		total += int64(w.Amount)
	}
	legs = append(legs, leg{account: sys.Inflight, amount: -total})
	if _, err := s.post(ctx, tx, postOpts{kind: TransferRefund, ref: batchID}, legs); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE custody_batches SET status = 'failed', error = $2, updated_at = $3 WHERE id = $1`,
		batchID, reason, time.Now().Unix()); err != nil {
		return err
	}
	for _, w := range ws {
		w.Error = reason
		if err := s.setWithdrawalStatus(ctx, tx, w, WithdrawalFailed, EventWithdrawalFailed); err != nil {
			return err
		}
	}
	return s.alert(ctx, tx, walletID, "batch_failed", "batch "+batchID+" failed: "+reason, map[string]any{"batch_id": batchID})
}

// BumpBatch replaces a batch's unconfirmed transaction with one paying
// feeRate (sat/vB) or more: the same inputs and payments, less change. The
// replacement is journaled in place of the old one before it is broadcast;
// both spend the same inputs, so at most one can confirm.
func (s *Service) BumpBatch(ctx context.Context, batchID string, feeRate int64) (*Batch, error) {
	b, err := s.GetBatch(ctx, batchID)
	if err != nil {
		return nil, err
	}
	if b.Status != BatchBroadcast && b.Status != BatchSigned {
		return nil, errorf(ErrInvalidState, "batch %s is %s; only unconfirmed batches can be bumped", batchID, b.Status)
	}
	if feeRate <= b.FeeRate || feeRate > maxFeeRate {
		return nil, errorf(ErrInvalid, "fee_rate must be above the batch's %d sat/vB and at most %d", b.FeeRate, maxFeeRate)
	}
	var psbtText string
	var raw []byte
	if err := s.db.QueryRowContext(ctx, `SELECT psbt, raw FROM custody_batches WHERE id = $1`, batchID).Scan(&psbtText, &raw); err != nil {
		return nil, err
	}
	var cur wire.MsgTx
	if err := cur.Deserialize(bytes.NewReader(raw)); err != nil {
		return nil, err
	}
	vsize := mempool.GetTxVirtualSize(btcutil.NewTx(&cur))
	// BIP125: the replacement pays its own relay fee (1 sat/vB) on top of
	// the old fee. New signatures may be a byte longer: a margin of one
	// vbyte per input covers that.
	newFee := max(feeRate*vsize, b.Fee+vsize+int64(len(cur.TxIn)))
	packet, err := txbuild.DecodePSBT(psbtText)
	if err != nil {
		return nil, err
	}
	change := -1
	for i, o := range packet.Outputs {
		if len(o.Bip32Derivation) > 0 {
			change = i
		}
	}
	if change < 0 {
		return nil, errorf(ErrInvalidState, "batch %s has no change output to pay a higher fee from", batchID)
	}
	out := packet.UnsignedTx.TxOut[change]
	left := out.Value - (newFee - b.Fee)
	if left < txbuild.DustThreshold(out.PkScript, s.params) {
		return nil, errorf(ErrInvalidState, "batch %s's change of %d sat cannot pay a fee of %d sat", batchID, out.Value, newFee)
	}
	out.Value = left
	for i := range packet.Inputs {
		packet.Inputs[i].PartialSigs, packet.Inputs[i].FinalScriptWitness, packet.Inputs[i].FinalScriptSig = nil, nil, nil
	}
	unsigned, err := txbuild.EncodePSBT(packet)
	if err != nil {
		return nil, err
	}
	final, err := s.sign(ctx, b.WalletID, packet)
	if err != nil {
		return nil, err
	}
	newRaw, err := serialize(final)
	if err != nil {
		return nil, err
	}
	txid := final.TxHash().String()
	err = s.db.InTx(ctx, func(tx *store.Tx) error {
		var status string
		if err := tx.QueryRowContext(ctx, `SELECT status FROM custody_batches WHERE id = $1`, batchID).Scan(&status); err != nil {
			return err
		}
		if status != BatchBroadcast && status != BatchSigned {
			return errorf(ErrInvalidState, "batch %s became %s", batchID, status)
		}
		now := time.Now().Unix()
		if _, err := tx.ExecContext(ctx, `INSERT INTO custody_batch_txs (txid, batch_id, fee, created_at) VALUES ($1, $2, $3, $4)`,
			txid, batchID, newFee, now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE custody_batches SET status = 'signed', txid = $2, raw = $3, psbt = $4, fee = $5,
			fee_rate = $6, updated_at = $7 WHERE id = $1`, batchID, txid, newRaw, unsigned, newFee, (newFee+vsize-1)/vsize, now); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE withdrawals SET txid = $2, updated_at = $3 WHERE batch_id = $1`, batchID, txid, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := s.broadcastBatch(ctx, batchID, final); err != nil {
		s.log.Warn("ledger: broadcasting a fee bump failed; it is retried at the next tick", "batch", batchID, "err", err)
	}
	return s.GetBatch(ctx, batchID)
}

// bumpStuck bumps batches unconfirmed for BumpAfter since their last
// broadcast, to the high-priority estimate or a quarter more than they pay.
func (s *Service) bumpStuck(ctx context.Context) error {
	cutoff := time.Now().Add(-s.cfg.BumpAfter).Unix()
	rows, err := s.db.QueryContext(ctx, `SELECT id, fee_rate FROM custody_batches WHERE status = 'broadcast' AND broadcast_at < $1`, cutoff)
	type stuck struct {
		id   string
		rate int64
	}
	ss, err := store.Collect(rows, err, func(row interface{ Scan(...any) error }) (stuck, error) {
		var st stuck
		err := row.Scan(&st.id, &st.rate)
		return st, err
	})
	if err != nil {
		return err
	}
	for _, st := range ss {
		rate := max(s.wallets.EstimateFeeRate(ctx, s.cfg.FeeConfTarget["high"]), st.rate+max(1, st.rate/4))
		if _, err := s.BumpBatch(ctx, st.id, rate); err != nil {
			s.log.Warn("ledger: fee-bumping a stuck batch failed", "batch", st.id, "err", err)
		}
	}
	return nil
}

func serialize(tx *wire.MsgTx) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(tx.SerializeSize())
	if err := tx.Serialize(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
