-- One internal transfer, as pgbench runs it for `coffer bench ledger`: two
-- UPDATEs and one INSERT in a transaction. Run it SERIALIZABLE, as Coffer
-- runs every write (pgbench has no isolation option; PGOPTIONS sets it):
--
--   PGOPTIONS='-c default_transaction_isolation=serializable' \
--     pgbench -n -f scripts/pgbench/transfer.sql -D accounts=1000 -D hot=0 \
--       -c 16 -j 2 -T 10 --max-tries=10 DSN
--
-- Variables: accounts, the number of accounts made by setup.sql; hot=0
-- moves money between two distinct accounts drawn uniformly; hot=1 makes
-- account 1 one side of every transfer (the direction drawn at random).
-- Amounts are 1 to 10,000. The two accounts are updated in id order, as
-- Coffer updates them, so concurrent transfers never deadlock.

\set x random(1, :accounts)
\set y (:x - 1 + random(1, :accounts - 1)) % :accounts + 1
\set other random(2, :accounts)
\set dir random(0, 1)
\set from case when :hot = 1 then (case when :dir = 0 then 1 else :other end) else :x end
\set to case when :hot = 1 then (case when :dir = 0 then :other else 1 end) else :y end
\set amount random(1, 10000)
\set lo least(:from, :to)
\set hi greatest(:from, :to)
\set dlo case when :lo = :from then -:amount else :amount end
BEGIN;
UPDATE bench_accounts SET balance = balance + :dlo WHERE id = :lo;
UPDATE bench_accounts SET balance = balance - :dlo WHERE id = :hi;
INSERT INTO bench_postings (from_id, to_id, amount) VALUES (:from, :to, :amount);
END;
