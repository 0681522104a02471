-- Authentication: operator API keys and short-lived wallet tokens. No secret
-- is stored, only its SHA-256 digest as lowercase hex; the secrets are 32
-- random bytes, so a fast hash is enough (no password-style stretching is
-- needed to resist guessing). *_at columns are unix seconds.

-- Operator API keys, shown once as coffer_<id>_<secret>. id is public: 12
-- lowercase hex chars, the part of the key used to find its row.
-- scope: read < write < admin. last_used_at is refreshed at most once a
-- minute; a revoked key keeps its row so listings show when it was revoked.
CREATE TABLE api_keys (
    id           TEXT   PRIMARY KEY,
    label        TEXT   NOT NULL DEFAULT '',
    scope        TEXT   NOT NULL CHECK (scope IN ('read','write','admin')),
    secret_hash  TEXT   NOT NULL,          -- hex SHA-256 of the secret bytes
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

-- Wallet tokens (cwt_…) a wallet app gets by signing a challenge with one of
-- the wallet's keys; each grants access to one wallet until expires_at.
-- mode: full | read. No foreign key to wallets: tokens are short-lived and
-- are deleted with their wallet through auth.RevokeWalletTokens.
CREATE TABLE wallet_tokens (
    token_hash TEXT   PRIMARY KEY,         -- hex SHA-256 of the token's secret bytes
    wallet_id  TEXT   NOT NULL,
    mode       TEXT   NOT NULL CHECK (mode IN ('full','read')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX wallet_tokens_wallet ON wallet_tokens (wallet_id);
CREATE INDEX wallet_tokens_expires ON wallet_tokens (expires_at);

-- Signed challenges already exchanged for a token, so a replayed signature
-- is refused. challenge_hash is the hex SHA-256 of the challenge text and
-- the signer's x coordinate, so signature variants (another header byte, the
-- negated S) of one signature count as the same use. A row is kept until
-- expires_at, after which the challenge's timestamp is too old anyway.
CREATE TABLE used_challenges (
    challenge_hash TEXT   PRIMARY KEY,
    wallet_id      TEXT   NOT NULL,
    used_at        BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX used_challenges_expires ON used_challenges (expires_at);
