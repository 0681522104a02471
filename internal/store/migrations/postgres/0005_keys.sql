-- Custodial key store (internal/keys): the seeds and account keys of
-- custodial (hot) wallets, encrypted at rest. Nothing here is readable
-- without a master key, which is never stored in the database: it comes
-- from a file or an environment variable (see `coffer keys`).
--
-- Envelope encryption: each owner has its own random 256-bit data key (DEK).
-- The secret is sealed with AES-256-GCM under the DEK, and the DEK is sealed
-- ("wrapped") with AES-256-GCM under a master key. Both blobs are a format
-- byte (1), a 12-byte random nonce, then ciphertext and 16-byte tag. The
-- additional authenticated data binds secret_ct to owner_id and kind, and
-- wrapped_dek to owner_id and master_key_id, so blobs copied between rows do
-- not decrypt. `coffer keys rotate-master` re-wraps the DEKs under a new
-- master key; secret_ct never changes. *_at columns are unix seconds.

-- One secret per owner. No foreign key: the owner is a custodial wallet id,
-- and a secret must outlive any mistake in the tables that refer to it.
CREATE TABLE custody_secrets (
    owner_id      TEXT   PRIMARY KEY,      -- custodial wallet id
    kind          TEXT   NOT NULL CHECK (kind IN ('mnemonic','xprv')),
    master_key_id TEXT   NOT NULL,         -- master key that wrapped the DEK: hex of the first 8 bytes of its SHA-256
    wrapped_dek   BYTEA  NOT NULL,         -- the DEK, sealed under that master key
    secret_ct     BYTEA  NOT NULL,         -- the secret, sealed under the DEK
    created_at    BIGINT NOT NULL,
    rotated_at    BIGINT                   -- last re-wrap under a new master key; NULL if never
);
