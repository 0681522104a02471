-- Idempotency keys: the answer to a mutating API request sent with an
-- Idempotency-Key header, kept so a retry with the same key gets the same
-- answer back instead of making the change again. Keys are scoped per
-- principal: two callers may use the same key. *_at and locked_until are
-- unix seconds.
--
-- state in_progress: a request holds the key until locked_until (its lease);
-- a retry before then is refused (idempotency_in_progress), a retry after it
-- takes the key over and runs again. state done: status, content_type,
-- location and body are the answer, replayed byte for byte. Answers that say
-- nothing final (5xx, 401, 403, 408, 429, a retryable 409) are never stored:
-- their row is deleted so the client can retry. Rows older than 24 hours are
-- expired: a request treats them as absent and api.PruneIdempotencyKeys
-- deletes them.
CREATE TABLE idempotency_keys (
    principal    TEXT    NOT NULL,        -- 'key:<API key id>', or 'wallet:<wallet id>' for wallet tokens
    key          TEXT    NOT NULL,        -- the Idempotency-Key header: 1–255 printable ASCII characters
    method       TEXT    NOT NULL,        -- HTTP method of the request that took the key
    path         TEXT    NOT NULL,        -- its URL path
    fingerprint  TEXT    NOT NULL,        -- hex SHA-256 of method, path with query, and body; a retry must match it
    state        TEXT    NOT NULL CHECK (state IN ('in_progress','done')),
    status       INTEGER,                 -- done: the HTTP status; null while in_progress
    content_type TEXT    NOT NULL DEFAULT '', -- done: the Content-Type header
    location     TEXT    NOT NULL DEFAULT '', -- done: the Location header, '' if none
    body         BYTEA,                   -- done: the response body, byte for byte; null while in_progress
    created_at   BIGINT  NOT NULL,        -- when the key was first used
    locked_until BIGINT  NOT NULL,        -- end of the lease of the request that took the key last
    PRIMARY KEY (principal, key),
    CHECK (state = 'in_progress' OR (status IS NOT NULL AND body IS NOT NULL))
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
