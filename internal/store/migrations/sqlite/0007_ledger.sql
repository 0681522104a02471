-- Custodial wallets and their double-entry ledger.
--
-- Every movement of value is a transfer whose postings sum to zero per asset.
-- Account rows carry the running balance, which always equals the sum of the
-- account's postings (coffer audit checks it). Amounts are signed satoshis:
-- liabilities to customers are positive, the hot wallet's asset side is the
-- negative of what Coffer holds on chain.

-- A custodial wallet: a watch-only wallet (same id, in wallets) whose seed
-- Coffer holds encrypted in custody_secrets.
CREATE TABLE custody_wallets (
    id          TEXT    PRIMARY KEY REFERENCES wallets (id),
    asset       TEXT    NOT NULL,           -- e.g. BTC, LTC
    label       TEXT    NOT NULL DEFAULT '',
    created_at  BIGINT  NOT NULL
);

-- Accounts. kind customer is a customer's; the others are the wallet's system
-- accounts, one each: hot (the on-chain holdings), fees (network fees paid),
-- imports (funds booked by import-unaccounted), inflight (withdrawals signed
-- but not yet confirmed).
-- held: reserved by queued withdrawals; available = balance - held.
-- pending_in: deposits seen but below the crediting threshold.
-- floor: the lowest available balance allowed. It is 0 except after a reorg
-- reversed a credited deposit (the only way a customer account goes below
-- zero); it rises back to 0 as the account recovers.
CREATE TABLE ledger_accounts (
    id          TEXT    PRIMARY KEY,
    wallet_id   TEXT    NOT NULL REFERENCES custody_wallets (id),
    kind        TEXT    NOT NULL CHECK (kind IN ('customer','hot','fees','imports','inflight')),
    name        TEXT    NOT NULL,
    external_id TEXT,                       -- the application's id, unique per wallet
    asset       TEXT    NOT NULL,
    balance     BIGINT  NOT NULL DEFAULT 0,
    held        BIGINT  NOT NULL DEFAULT 0 CHECK (held >= 0),
    pending_in  BIGINT  NOT NULL DEFAULT 0 CHECK (pending_in >= 0),
    floor       BIGINT  NOT NULL DEFAULT 0 CHECK (floor <= 0),
    flagged     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    UNIQUE (wallet_id, external_id),
    CHECK (kind <> 'customer' OR balance - held >= floor)
);
CREATE INDEX ledger_accounts_wallet ON ledger_accounts (wallet_id, kind, created_at);
-- One system account of each kind per wallet.
CREATE UNIQUE INDEX ledger_accounts_system ON ledger_accounts (wallet_id, kind) WHERE kind <> 'customer';

-- A transfer: one atomic movement. kind: transfer (between accounts),
-- deposit, reversal (of a credited deposit), withdrawal (signed batch),
-- settlement (confirmed batch), refund (failed batch), import.
-- idem_key: the client's Idempotency-Key (scoped by its credential) and
-- request_hash the request it came with.
CREATE TABLE ledger_transfers (
    id           TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL,
    ref          TEXT    NOT NULL DEFAULT '', -- deposit, withdrawal or batch id
    memo         TEXT    NOT NULL DEFAULT '',
    idem_key     TEXT    UNIQUE,
    request_hash TEXT,
    created_at   BIGINT  NOT NULL
);
CREATE INDEX ledger_transfers_ref ON ledger_transfers (ref);

-- Postings: the legs of transfers. balance_after is the account's balance
-- right after this posting.
CREATE TABLE ledger_postings (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    transfer_id   TEXT    NOT NULL REFERENCES ledger_transfers (id),
    account_id    TEXT    NOT NULL REFERENCES ledger_accounts (id),
    asset         TEXT    NOT NULL,
    amount        BIGINT  NOT NULL CHECK (amount <> 0),
    balance_after BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL
);
CREATE INDEX ledger_postings_account ON ledger_postings (account_id, id);
CREATE INDEX ledger_postings_transfer ON ledger_postings (transfer_id);

-- Deposit addresses: receive addresses of the hot wallet handed to accounts.
CREATE TABLE custody_addresses (
    wallet_id   TEXT    NOT NULL,
    branch      INTEGER NOT NULL,
    idx         BIGINT  NOT NULL,
    account_id  TEXT    NOT NULL REFERENCES ledger_accounts (id),
    address     TEXT    NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL,
    PRIMARY KEY (wallet_id, branch, idx),
    FOREIGN KEY (wallet_id, branch, idx) REFERENCES wallet_addresses (wallet_id, branch, idx)
);
CREATE INDEX custody_addresses_account ON custody_addresses (account_id, created_at);

-- Deposits: outputs paying a deposit address. status: pending (seen, below
-- the threshold), credited (posted), processed (acknowledged by the
-- application), removed (its transaction left the chain and the mempool
-- before crediting). confirmations is tracked up to the configured maximum.
CREATE TABLE deposits (
    id            TEXT    PRIMARY KEY,
    wallet_id     TEXT    NOT NULL REFERENCES custody_wallets (id),
    account_id    TEXT    NOT NULL REFERENCES ledger_accounts (id),
    txid          TEXT    NOT NULL,
    vout          INTEGER NOT NULL,
    address       TEXT    NOT NULL,
    amount        BIGINT  NOT NULL CHECK (amount > 0),
    status        TEXT    NOT NULL CHECK (status IN ('pending','credited','processed','removed')),
    confirmations BIGINT  NOT NULL DEFAULT 0,
    block_height  BIGINT,
    reversals     INTEGER NOT NULL DEFAULT 0, -- times a reorg reversed its credit
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    UNIQUE (txid, vout)
);
CREATE INDEX deposits_account ON deposits (account_id, created_at);
CREATE INDEX deposits_status ON deposits (status, wallet_id);

-- Withdrawal batches: one on-chain transaction paying many withdrawals.
-- The signed transaction is written here before it is broadcast (status
-- signed); a restart rebroadcasts it rather than building another.
-- status: signed | broadcast | confirmed | failed. txid/raw/fee are the
-- current version (a fee bump replaces them; custody_batch_txs keeps all).
CREATE TABLE custody_batches (
    id           TEXT    PRIMARY KEY,
    wallet_id    TEXT    NOT NULL REFERENCES custody_wallets (id),
    status       TEXT    NOT NULL CHECK (status IN ('signed','broadcast','confirmed','failed')),
    txid         TEXT    NOT NULL,
    raw          BLOB    NOT NULL,
    psbt         TEXT    NOT NULL,          -- unsigned, for fee bumps
    fee          BIGINT  NOT NULL,
    fee_rate     BIGINT  NOT NULL,          -- sat/vB
    proposal_id  TEXT    NOT NULL,
    error        TEXT    NOT NULL DEFAULT '',
    broadcast_at BIGINT,                    -- last (re)broadcast of the current version
    confirmed_txid TEXT,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);
CREATE INDEX custody_batches_status ON custody_batches (status, wallet_id);

-- Every transaction ever signed for a batch. They spend the same inputs, so
-- at most one of them can confirm.
CREATE TABLE custody_batch_txs (
    txid       TEXT   PRIMARY KEY,
    batch_id   TEXT   NOT NULL REFERENCES custody_batches (id),
    fee        BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX custody_batch_txs_batch ON custody_batch_txs (batch_id);

-- Withdrawals. status: queued (funds held) → signed (in a journaled batch,
-- moved to inflight) → broadcast → confirmed; or cancelled / failed with the
-- funds returned; or internal: the address was another account's deposit
-- address, so it was paid by the ledger transfer transfer_id. vout is the
-- batch output paying it; fee what the customer was charged on top.
CREATE TABLE withdrawals (
    id           TEXT    PRIMARY KEY,
    wallet_id    TEXT    NOT NULL REFERENCES custody_wallets (id),
    account_id   TEXT    NOT NULL REFERENCES ledger_accounts (id),
    address      TEXT    NOT NULL,
    amount       BIGINT  NOT NULL CHECK (amount > 0),
    fee          BIGINT  NOT NULL DEFAULT 0 CHECK (fee >= 0),
    priority     TEXT    NOT NULL,          -- fee priority: low | normal | high
    status       TEXT    NOT NULL CHECK (status IN ('queued','signed','broadcast','confirmed','cancelled','failed','internal')),
    transfer_id  TEXT,
    batch_id     TEXT    REFERENCES custody_batches (id),
    txid         TEXT,
    vout         INTEGER,
    error        TEXT    NOT NULL DEFAULT '',
    idem_key     TEXT    UNIQUE,
    request_hash TEXT,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);
CREATE INDEX withdrawals_status ON withdrawals (status, wallet_id, created_at);
CREATE INDEX withdrawals_account ON withdrawals (account_id, created_at);
CREATE INDEX withdrawals_batch ON withdrawals (batch_id);
