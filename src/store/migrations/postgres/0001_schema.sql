-- runrate on PostgreSQL: the same records as on SQLite, shared by several replicas.
-- Figures are append-only: every row belongs to the load that wrote it.

CREATE TABLE loads (
    id BIGINT PRIMARY KEY,
    recorded_at_us BIGINT NOT NULL,
    file_name TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    facts_added BIGINT NOT NULL,
    facts_revised BIGINT NOT NULL,
    facts_unchanged BIGINT NOT NULL,
    definitions_changed BIGINT NOT NULL
);

CREATE TABLE provider_versions (
    provider_id TEXT NOT NULL,
    load_id BIGINT NOT NULL REFERENCES loads (id),
    body TEXT NOT NULL,
    PRIMARY KEY (provider_id, load_id)
);

CREATE TABLE metric_versions (
    metric_id TEXT NOT NULL,
    load_id BIGINT NOT NULL REFERENCES loads (id),
    body TEXT NOT NULL,
    PRIMARY KEY (metric_id, load_id)
);

CREATE TABLE fact_revisions (
    provider_id TEXT NOT NULL,
    period TEXT NOT NULL,
    metric_id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    load_id BIGINT NOT NULL REFERENCES loads (id),
    body TEXT NOT NULL,
    -- restated, corrected, estimate-replaced; NULL for a first revision
    reason TEXT,
    PRIMARY KEY (provider_id, period, metric_id, revision)
);

CREATE TABLE subscribers (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    -- pending, confirmed, unsubscribed, bounced, complained
    state TEXT NOT NULL,
    language TEXT NOT NULL,
    follows_all BOOLEAN NOT NULL,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    confirmation_queued_at_us BIGINT
);

CREATE INDEX subscribers_by_state ON subscribers (state, id);

CREATE TABLE subscriber_providers (
    subscriber_id BIGINT NOT NULL REFERENCES subscribers (id),
    provider_id TEXT NOT NULL,
    PRIMARY KEY (subscriber_id, provider_id)
);

-- Only digests: a token itself exists only in the email that carries it.
CREATE TABLE subscription_tokens (
    digest TEXT PRIMARY KEY,
    subscriber_id BIGINT NOT NULL REFERENCES subscribers (id),
    purpose TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    expires_at_us BIGINT
);

CREATE INDEX subscription_tokens_by_subscriber ON subscription_tokens (subscriber_id, purpose);

CREATE TABLE notifications (
    load_id BIGINT PRIMARY KEY REFERENCES loads (id),
    created_at_us BIGINT NOT NULL,
    recipients BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    load_id BIGINT REFERENCES loads (id),
    subscriber_id BIGINT NOT NULL REFERENCES subscribers (id),
    email TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at_us BIGINT NOT NULL,
    last_error TEXT,
    sent_at_us BIGINT,
    created_at_us BIGINT NOT NULL
);

-- Claiming with FOR UPDATE SKIP LOCKED scans only unfinished rows.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at_us, id)
    WHERE state IN ('pending', 'sending', 'retrying');

CREATE INDEX deliveries_by_load ON deliveries (load_id, state);
