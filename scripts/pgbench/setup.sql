-- The pgbench baseline for `coffer bench ledger`: the least a database must
-- do for one internal transfer. Run with psql into an empty database:
--
--   psql -X -v ON_ERROR_STOP=1 -v accounts=1000 -f scripts/pgbench/setup.sql DSN
--
-- Every account starts with 1,000,000,000 (10 BTC in satoshis), as the
-- customer accounts of coffer bench ledger do; balances may not go negative,
-- as customer accounts may not. Postings carry an index per side, as
-- Coffer's do, so an account's entries can be paged.

SET client_min_messages TO warning;

DROP TABLE IF EXISTS bench_postings;
DROP TABLE IF EXISTS bench_accounts;

CREATE TABLE bench_accounts (
    id      BIGINT PRIMARY KEY,
    balance BIGINT NOT NULL CHECK (balance >= 0)
);

CREATE TABLE bench_postings (
    id         BIGSERIAL   PRIMARY KEY,
    from_id    BIGINT      NOT NULL REFERENCES bench_accounts (id),
    to_id      BIGINT      NOT NULL REFERENCES bench_accounts (id),
    amount     BIGINT      NOT NULL CHECK (amount > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX bench_postings_from ON bench_postings (from_id, id);
CREATE INDEX bench_postings_to ON bench_postings (to_id, id);

INSERT INTO bench_accounts (id, balance)
    SELECT g, 1000000000 FROM generate_series(1, :accounts) AS g;

VACUUM ANALYZE bench_accounts;
