-- Figures, append-only: every row belongs to the load that wrote it, and no row is ever
-- updated or deleted. The newest version of a definition and the highest revision of a
-- fact are the current ones.

CREATE TABLE loads (
    id INTEGER PRIMARY KEY,
    recorded_at_us INTEGER NOT NULL,
    file_name TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    facts_added INTEGER NOT NULL,
    facts_revised INTEGER NOT NULL,
    facts_unchanged INTEGER NOT NULL,
    definitions_changed INTEGER NOT NULL
);

CREATE TABLE provider_versions (
    provider_id TEXT NOT NULL,
    load_id INTEGER NOT NULL REFERENCES loads (id),
    body TEXT NOT NULL,
    PRIMARY KEY (provider_id, load_id)
);

CREATE TABLE metric_versions (
    metric_id TEXT NOT NULL,
    load_id INTEGER NOT NULL REFERENCES loads (id),
    body TEXT NOT NULL,
    PRIMARY KEY (metric_id, load_id)
);

CREATE TABLE fact_revisions (
    provider_id TEXT NOT NULL,
    period TEXT NOT NULL,
    metric_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    load_id INTEGER NOT NULL REFERENCES loads (id),
    body TEXT NOT NULL,
    PRIMARY KEY (provider_id, period, metric_id, revision)
);
