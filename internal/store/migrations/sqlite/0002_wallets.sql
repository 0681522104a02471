-- Watch-only wallets: registered descriptors, their derived addresses, the
-- transactions that touch them, and proposals awaiting a signature.

-- One row per registered wallet. id is the hex double-SHA256 of descriptor.
-- status: creating | syncing | ready | error. History recovery scans from
-- birthday; scan_height is the last height it covered, scan_target the tip it
-- is heading for (progress = covered / span).
CREATE TABLE wallets (
    id           TEXT    PRIMARY KEY,
    descriptor   TEXT    NOT NULL,          -- canonical, with checksum
    receive_desc TEXT    NOT NULL,          -- the receive chain (…/0/*)
    change_desc  TEXT    NOT NULL,          -- the change chain (…/1/*)
    script_type  TEXT    NOT NULL,
    label        TEXT    NOT NULL DEFAULT '',
    gap_limit    INTEGER NOT NULL CHECK (gap_limit BETWEEN 1 AND 1000),
    birthday     BIGINT  NOT NULL,          -- first height scanned
    status       TEXT    NOT NULL CHECK (status IN ('creating','syncing','ready','error')),
    scan_height  BIGINT  NOT NULL,
    scan_target  BIGINT  NOT NULL,
    error        TEXT    NOT NULL DEFAULT '',
    -- The balance last announced by a balance.changed event.
    bal_confirmed   BIGINT NOT NULL DEFAULT 0,
    bal_unconfirmed BIGINT NOT NULL DEFAULT 0,
    bal_immature    BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);

-- Derived addresses. branch 0 is the receive chain, 1 the change chain.
-- used: a transaction Coffer has seen pays it. reserved_at: handed out by
-- POST …/addresses/next.
CREATE TABLE wallet_addresses (
    wallet_id   TEXT    NOT NULL REFERENCES wallets (id) ON DELETE CASCADE,
    branch      INTEGER NOT NULL CHECK (branch IN (0, 1)),
    idx         BIGINT  NOT NULL CHECK (idx >= 0),
    script      BLOB    NOT NULL,
    address     TEXT    NOT NULL,
    used        BOOLEAN NOT NULL DEFAULT FALSE,
    reserved_at BIGINT,
    PRIMARY KEY (wallet_id, branch, idx)
);
CREATE INDEX wallet_addresses_script ON wallet_addresses (script);

-- Transactions that touch a wallet, with the wallet's view of them. status,
-- height and pos mirror txs; sort_height/sort_pos order the history newest
-- first (unconfirmed txs sort at the height after the tip they were seen at).
CREATE TABLE wallet_txs (
    wallet_id   TEXT    NOT NULL REFERENCES wallets (id) ON DELETE CASCADE,
    txid        TEXT    NOT NULL REFERENCES txs (txid) ON DELETE CASCADE,
    status      TEXT    NOT NULL,
    sort_height BIGINT  NOT NULL,
    sort_pos    BIGINT  NOT NULL,
    received    BIGINT  NOT NULL,          -- paid to the wallet's scripts
    sent        BIGINT  NOT NULL,          -- the wallet's outputs it spends
    fee         BIGINT,                    -- known when every input is a tracked output
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (wallet_id, txid)
);
CREATE INDEX wallet_txs_order ON wallet_txs (wallet_id, sort_height, sort_pos, txid);
CREATE INDEX wallet_txs_txid ON wallet_txs (txid);

-- Transaction proposals (unsigned PSBTs) and the inputs they reserve.
-- status: open | sent | cancelled | expired | failed.
CREATE TABLE wallet_proposals (
    id          TEXT    PRIMARY KEY,
    wallet_id   TEXT    NOT NULL REFERENCES wallets (id) ON DELETE CASCADE,
    status      TEXT    NOT NULL CHECK (status IN ('open','sent','cancelled','expired','failed')),
    psbt        TEXT    NOT NULL,          -- base64 PSBT as proposed
    fee         BIGINT  NOT NULL,
    fee_rate    BIGINT  NOT NULL,          -- sat/vB
    txid        TEXT    NOT NULL,          -- of the unsigned transaction
    error       TEXT    NOT NULL DEFAULT '',
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
CREATE INDEX wallet_proposals_open ON wallet_proposals (status, expires_at);
CREATE INDEX wallet_proposals_wallet ON wallet_proposals (wallet_id, created_at);

-- An input reserved by an open proposal; the primary key makes sure no two
-- proposals share one.
CREATE TABLE wallet_reservations (
    txid        TEXT    NOT NULL,
    vout        INTEGER NOT NULL,
    proposal_id TEXT    NOT NULL REFERENCES wallet_proposals (id) ON DELETE CASCADE,
    expires_at  BIGINT  NOT NULL,
    PRIMARY KEY (txid, vout)
);
CREATE INDEX wallet_reservations_proposal ON wallet_reservations (proposal_id);
