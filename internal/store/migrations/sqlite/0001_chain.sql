-- Chain state kept by the follower. Hashes and txids are lowercase hex in the
-- usual display (big-endian) order; amounts are integer minor units
-- (satoshis); *_at columns are unix seconds.

-- Blocks of the best chain the follower has applied, from its start height.
CREATE TABLE chain_blocks (
    height     BIGINT PRIMARY KEY,
    hash       TEXT   NOT NULL UNIQUE,
    prev_hash  TEXT   NOT NULL,
    time       BIGINT NOT NULL,           -- block header time
    tx_count   BIGINT NOT NULL,
    applied_at BIGINT NOT NULL
);

-- The follower's cursor: the last block applied. One row; moved in the same
-- transaction as the block it names.
CREATE TABLE chain_cursor (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    height     BIGINT NOT NULL,
    hash       TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Output scripts Coffer watches. owner says who asked (a wallet id later).
CREATE TABLE tracked_scripts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    script     BLOB  NOT NULL UNIQUE,
    owner      TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

-- Transactions that pay a tracked script or spend a tracked output.
-- status: mempool | confirmed | replaced | conflicted | dropped.
-- A confirmed tx has its block; a reorg returns it to mempool.
CREATE TABLE txs (
    txid          TEXT    PRIMARY KEY,
    status        TEXT    NOT NULL CHECK (status IN ('mempool','confirmed','replaced','conflicted','dropped')),
    block_height  BIGINT,
    block_hash    TEXT,
    block_pos     INTEGER,                 -- index of the tx in its block
    coinbase      BOOLEAN NOT NULL,
    raw           BLOB   NOT NULL,        -- serialized transaction
    first_seen_at BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    CHECK ((status = 'confirmed') = (block_hash IS NOT NULL))
);
CREATE INDEX txs_block_height ON txs (block_height);
CREATE INDEX txs_status ON txs (status);

-- Outputs of tracked txs that pay tracked scripts.
CREATE TABLE tx_outputs (
    txid   TEXT    NOT NULL REFERENCES txs (txid) ON DELETE CASCADE,
    vout   INTEGER NOT NULL,
    script BLOB   NOT NULL,
    amount BIGINT  NOT NULL CHECK (amount >= 0),
    PRIMARY KEY (txid, vout)
);
CREATE INDEX tx_outputs_script ON tx_outputs (script);

-- Inputs of tracked txs that spend tracked outputs. An output is spent when a
-- tx here with status mempool or confirmed spends it.
CREATE TABLE tx_spends (
    txid      TEXT    NOT NULL REFERENCES txs (txid) ON DELETE CASCADE,
    vin       INTEGER NOT NULL,
    prev_txid TEXT    NOT NULL,
    prev_vout INTEGER NOT NULL,
    PRIMARY KEY (txid, vin)
);
CREATE INDEX tx_spends_prev ON tx_spends (prev_txid, prev_vout);

-- The event log: append-only, ids increase in commit order.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    type       TEXT   NOT NULL,
    wallet_id  TEXT,
    data       TEXT   NOT NULL,            -- JSON object
    created_at BIGINT NOT NULL
);
CREATE INDEX events_wallet ON events (wallet_id, id);
