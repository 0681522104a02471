package regtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// InvalidateBlock marks a block and its descendants invalid; the node falls
// back to the block's parent. Their transactions return to the mempool
// where still valid.
func (n *Node) InvalidateBlock(ctx context.Context, hash string) error {
	if err := n.client.Call(ctx, "invalidateblock", nil, hash); err != nil {
		return err
	}
	if n.Kind == KindLitecoind {
		// Litecoin Core mines deterministically (no random extranonce): a
		// block re-mined on the same parent in the same second to the same
		// address would be the invalidated block again, which it refuses.
		// A fresh coinbase address makes the new branch differ.
		n.w.mu.Lock()
		defer n.w.mu.Unlock()
		if _, err := n.w.newOwnKey(); err != nil {
			return err
		}
	}
	return nil
}

// ReconsiderBlock clears the invalid mark InvalidateBlock set; the node
// switches back if that branch has more work.
func (n *Node) ReconsiderBlock(ctx context.Context, hash string) error {
	return n.client.Call(ctx, "reconsiderblock", nil, hash)
}

// Reorg replaces the top depth blocks: it invalidates the block at height
// tip-depth+1, calls beforeMining (if set; e.g. to put other transactions in
// the mempool), and mines depth+1 blocks so the new branch is longer. It
// returns the orphaned hashes and the new branch, both oldest first. The
// orphaned branch stays marked invalid.
func (n *Node) Reorg(ctx context.Context, depth int, beforeMining func() error) (orphaned, newHashes []string, err error) {
	if depth < 1 {
		return nil, nil, errors.New("regtest: reorg depth must be at least 1")
	}
	tip, err := n.client.GetBlockCount(ctx)
	if err != nil {
		return nil, nil, err
	}
	if int64(depth) > tip {
		return nil, nil, fmt.Errorf("regtest: cannot reorg %d blocks at height %d", depth, tip)
	}
	for h := tip - int64(depth) + 1; h <= tip; h++ {
		hash, err := n.client.GetBlockHash(ctx, h)
		if err != nil {
			return nil, nil, err
		}
		orphaned = append(orphaned, hash)
	}
	if err := n.InvalidateBlock(ctx, orphaned[0]); err != nil {
		return orphaned, nil, err
	}
	if beforeMining != nil {
		if err := beforeMining(); err != nil {
			return orphaned, nil, err
		}
	}
	newHashes, err = n.Mine(ctx, depth+1)
	if err != nil {
		return orphaned, newHashes, err
	}
	best, err := n.client.GetBestBlockHash(ctx)
	if err != nil {
		return orphaned, newHashes, err
	}
	if best != newHashes[len(newHashes)-1] {
		return orphaned, newHashes, fmt.Errorf("regtest: after reorg the tip is %s, not the new branch's %s", best, newHashes[len(newHashes)-1])
	}
	n.logf("regtest: %s reorg: %d blocks replaced by %d from height %d", n.Kind, depth, depth+1, tip-int64(depth)+1)
	return orphaned, newHashes, nil
}

// Connect makes n keep a P2P connection to other and waits until it is up.
func (n *Node) Connect(ctx context.Context, other *Node) error {
	addr := other.P2PAddr()
	if err := n.client.Call(ctx, "addnode", nil, addr, "add"); err != nil {
		return err
	}
	if n.Kind == KindLitecoind {
		// "add" only connects on Core's next added-peers round (up to
		// a minute); "onetry" connects now.
		if err := n.client.Call(ctx, "addnode", nil, addr, "onetry"); err != nil {
			return err
		}
	}
	return n.waitPeer(ctx, addr, true)
}

// Disconnect drops n's connection to other and stops reconnecting.
func (n *Node) Disconnect(ctx context.Context, other *Node) error {
	addr := other.P2PAddr()
	// btcd's "remove" also disconnects; Core's only forgets the address.
	if err := n.client.Call(ctx, "addnode", nil, addr, "remove"); err != nil && n.Kind == KindBtcd {
		return err
	}
	if n.Kind == KindLitecoind {
		if err := n.client.Call(ctx, "disconnectnode", nil, addr); err != nil {
			return err
		}
	}
	return n.waitPeer(ctx, addr, false)
}

func (n *Node) waitPeer(ctx context.Context, addr string, want bool) error {
	for {
		var peers []struct {
			Addr string `json:"addr"`
		}
		if err := n.client.Call(ctx, "getpeerinfo", &peers); err != nil {
			return err
		}
		found := false
		for _, p := range peers {
			found = found || p.Addr == addr
		}
		if found == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("regtest: waiting for peer %s (connected=%v): %w", addr, want, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitSynced waits until every node in others has n's best block.
func (n *Node) WaitSynced(ctx context.Context, others ...*Node) error {
	for {
		best, err := n.client.GetBestBlockHash(ctx)
		if err != nil {
			return err
		}
		synced := true
		for _, o := range others {
			h, err := o.client.GetBestBlockHash(ctx)
			if err != nil {
				return err
			}
			synced = synced && h == best
		}
		if synced {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("regtest: waiting for sync to %s: %w", best, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DoubleSpend builds (but does not send) a transaction spending exactly the
// inputs of txid, which must all be key's P2PKH outputs, paying everything
// but fee to payTo: an RBF replacement while txid is in the mempool, a
// conflict once it is mined elsewhere.
func (n *Node) DoubleSpend(ctx context.Context, txid string, key *Key, payTo []byte, fee int64) ([]byte, error) {
	orig, err := n.rawTx(ctx, txid)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, o := range orig.TxOut {
		total += o.Value
	}
	tx := wire.NewMsgTx(2)
	for _, in := range orig.TxIn {
		tx.AddTxIn(&wire.TxIn{PreviousOutPoint: in.PreviousOutPoint, Sequence: in.Sequence})
	}
	tx.AddTxOut(wire.NewTxOut(total-fee, payTo))
	for i, in := range tx.TxIn {
		prev, err := n.rawTx(ctx, in.PreviousOutPoint.Hash.String())
		if err != nil {
			return nil, err
		}
		script := prev.TxOut[in.PreviousOutPoint.Index].PkScript
		if !bytes.Equal(script, key.PkScript()) {
			return nil, fmt.Errorf("regtest: input %d of %s is not the key's P2PKH output", i, txid)
		}
		if tx.TxIn[i].SignatureScript, err = txscript.SignatureScript(tx, i, script, txscript.SigHashAll, key.PrivKey, true); err != nil {
			return nil, err
		}
	}
	var buf bytes.Buffer
	err = tx.Serialize(&buf)
	return buf.Bytes(), err
}

func (n *Node) rawTx(ctx context.Context, txid string) (*wire.MsgTx, error) {
	raw, err := n.client.GetRawTransaction(ctx, txid)
	if err != nil {
		return nil, err
	}
	return n.chain.ParseTx(raw)
}
