-- Webhooks: HTTP endpoints that receive the event log, signed as the
-- Standard Webhooks specification says (webhook-id, webhook-timestamp,
-- webhook-signature headers), and the persistent queue of deliveries to them.
-- *_at columns are unix seconds; next_attempt_ms and locked_until_ms are unix
-- milliseconds (retry times and leases need better than a second);
-- *latency_ms are durations in milliseconds.
--
-- How it flows: one dispatcher (any instance) reads the event log from
-- webhook_cursor and, in the same transaction that moves the cursor, adds one
-- webhook_deliveries row per matching enabled endpoint and event. Workers
-- then send each endpoint's pending deliveries oldest first, one at a time:
-- the next waits until the previous one succeeded or ran out of attempts.
-- A worker leases the delivery it sends (locked_by, locked_until_ms) so one
-- instance makes each attempt; every attempt is logged in webhook_attempts.

-- Endpoints. An endpoint receives the events with an id above after_event_id
-- whose type matches event_types and, when wallet_id is set, whose wallet_id
-- is that wallet. Events written while it is disabled are not queued for it.
CREATE TABLE webhook_endpoints (
    id              TEXT    PRIMARY KEY,            -- whk_ + 24 hex digits
    url             TEXT    NOT NULL,               -- http(s) URL deliveries are POSTed to; redirects are not followed
    event_types     TEXT    NOT NULL DEFAULT '[]',  -- JSON array of type patterns: "tx.seen", or "deposit.*" (trailing * = prefix); [] = every type
    wallet_id       TEXT,                           -- only events of this wallet (events.wallet_id); null = all events
    description     TEXT    NOT NULL DEFAULT '',    -- the operator's note
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,  -- false: nothing is queued or sent; pending deliveries wait
    disabled_reason TEXT    NOT NULL DEFAULT '',    -- why Coffer disabled it (failing too long); '' when disabled by hand or enabled
    failing_since   BIGINT,                         -- first failed attempt since the last success; null while healthy
    after_event_id  BIGINT  NOT NULL,               -- the dispatcher's cursor when it was created: later events only
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL
);

-- Signing secrets. Deliveries are signed with every secret of the endpoint
-- that has not expired: the current one (expires_at null) and, for the
-- overlap after a rotation, the previous ones. The secret must be kept as is
-- (an HMAC key cannot be stored as a digest): reading this table lets one
-- forge deliveries, so protect database access accordingly.
CREATE TABLE webhook_secrets (
    secret      TEXT   PRIMARY KEY,                 -- whsec_ + base64 of 32 random bytes
    endpoint_id TEXT   NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT                              -- null: the current secret; else it signs until then
);
CREATE INDEX webhook_secrets_endpoint ON webhook_secrets (endpoint_id, created_at);

-- The dispatcher's position in the event log: one row (id = 1). Events up to
-- last_event_id have been fanned out to deliveries; it moves in the same
-- transaction as the rows it adds, so each event is queued once.
CREATE TABLE webhook_cursor (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_id BIGINT  NOT NULL,                 -- the last event fanned out
    updated_at    BIGINT  NOT NULL
);
-- Start at the end of the log: endpoints get events from their creation on.
INSERT INTO webhook_cursor (id, last_event_id, updated_at)
    SELECT 1, COALESCE(MAX(id), 0), CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) FROM events;

-- Deliveries: one event to one endpoint. origin event: queued by the
-- dispatcher, at most once per endpoint and event; origin redeliver: queued
-- by a redeliver request. status pending → succeeded (a 2xx answer) or
-- failed (every attempt of the retry schedule failed). A pending delivery is
-- sent when it is its endpoint's oldest pending one (smallest id), the
-- endpoint is enabled, next_attempt_ms has passed and no unexpired lease
-- holds it.
CREATE TABLE webhook_deliveries (
    id               BIGSERIAL PRIMARY KEY,             -- the delivery id of the API; also the queue order
    endpoint_id      TEXT    NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         BIGINT  NOT NULL REFERENCES events (id), -- sent with webhook-id evt_<event_id>
    origin           TEXT    NOT NULL CHECK (origin IN ('event','redeliver')),
    status           TEXT    NOT NULL CHECK (status IN ('pending','succeeded','failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,      -- attempts made (and logged) so far
    next_attempt_ms  BIGINT,                          -- pending: when the next attempt is due; null once finished
    locked_by        TEXT,                            -- instance making an attempt now (coffer serve's webhook instance id)
    locked_until_ms  BIGINT,                          -- its lease ends then; after that another instance may retry
    last_attempt_at  BIGINT,                          -- when the last attempt started
    last_status_code INTEGER,                         -- HTTP status of the last attempt; null if it got no answer
    last_error       TEXT    NOT NULL DEFAULT '',     -- why the last attempt failed; '' if it succeeded
    last_latency_ms  BIGINT,                          -- how long the last attempt took
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    CHECK ((status = 'pending') = (next_attempt_ms IS NOT NULL))
);
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (endpoint_id, event_id) WHERE origin = 'event';
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

-- Every attempt of a delivery, kept for GET /v1/webhooks/{id}/deliveries.
CREATE TABLE webhook_attempts (
    id           BIGSERIAL PRIMARY KEY,
    delivery_id  BIGINT  NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,                   -- 1 for the first attempt of the delivery
    instance     TEXT    NOT NULL,                   -- instance that made it
    attempted_at BIGINT  NOT NULL,                   -- when it started; also the webhook-timestamp header sent
    succeeded    BOOLEAN NOT NULL,                   -- a 2xx answer within the timeout
    status_code  INTEGER,                            -- HTTP status; null when no answer came (timeout, connection error)
    error        TEXT    NOT NULL DEFAULT '',        -- why it failed: the status, a timeout, a connection error
    latency_ms   BIGINT  NOT NULL,                   -- from sending the request to the end of reading the answer
    response     TEXT    NOT NULL DEFAULT '',        -- the start of the answer's body, at most 1 KiB
    UNIQUE (delivery_id, attempt)
);
