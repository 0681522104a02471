-- Each watch-only wallet's unspent outputs, kept by the follower in the same
-- transaction as the block or mempool change that creates or spends them, so
-- balances and UTXO listings read one small table instead of joining the
-- whole output history. An output is here while the transaction that made it
-- is live (mempool or confirmed) and no live transaction spends it.
CREATE TABLE wallet_utxos (
    wallet_id TEXT    NOT NULL REFERENCES wallets (id) ON DELETE CASCADE,
    txid      TEXT    NOT NULL,
    vout      INTEGER NOT NULL,
    amount    BIGINT  NOT NULL CHECK (amount >= 0),
    branch    INTEGER NOT NULL,          -- of the paid address (0 receive, 1 change)
    idx       BIGINT  NOT NULL,          -- of the paid address
    address   TEXT    NOT NULL,          -- the paid address
    height    BIGINT,                    -- block height; NULL in the mempool
    coinbase  BOOLEAN NOT NULL,
    PRIMARY KEY (wallet_id, txid, vout),
    FOREIGN KEY (txid, vout) REFERENCES tx_outputs (txid, vout) ON DELETE CASCADE
) WITHOUT ROWID; -- stored in key order: a wallet's outputs are read in one sequential range
CREATE INDEX wallet_utxos_outpoint ON wallet_utxos (txid, vout);

-- Existing wallets: fill in what the output history implies.
INSERT INTO wallet_utxos (wallet_id, txid, vout, amount, branch, idx, address, height, coinbase)
SELECT a.wallet_id, o.txid, o.vout, o.amount, a.branch, a.idx, a.address, t.block_height, t.coinbase
FROM wallet_addresses a
JOIN tx_outputs o ON o.script = a.script
JOIN txs t ON t.txid = o.txid AND t.status IN ('mempool', 'confirmed')
WHERE NOT EXISTS (
    SELECT 1 FROM tx_spends s JOIN txs st ON st.txid = s.txid
    WHERE s.prev_txid = o.txid AND s.prev_vout = o.vout AND st.status IN ('mempool', 'confirmed'));
