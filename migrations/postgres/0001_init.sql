-- The PostgreSQL store: the same tables as migrations/sqlite, with native times.
-- Keys that hold an optional time (RECURRENCE-ID, occurrence slot) are TEXT in the one
-- RFC 3339 form the code writes, '' for none, so that they can be part of unique keys.

CREATE TABLE messages (
    id             BIGSERIAL PRIMARY KEY,
    sha256         TEXT        NOT NULL UNIQUE,
    received_at    TIMESTAMPTZ NOT NULL,
    source         TEXT        NOT NULL,
    envelope_from  TEXT,
    envelope_rcpts TEXT        NOT NULL,
    message_id     TEXT,
    size           BIGINT      NOT NULL,
    raw            BYTEA       NOT NULL,
    status         TEXT        NOT NULL DEFAULT 'received',
    outcome        TEXT,
    error          TEXT,
    processed_at   TIMESTAMPTZ
);
CREATE INDEX messages_status ON messages(status);

CREATE TABLE events (
    id             BIGSERIAL PRIMARY KEY,
    tenant         TEXT        NOT NULL,
    uid            TEXT        NOT NULL,
    recurrence_id  TEXT        NOT NULL DEFAULT '',
    created_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant, uid, recurrence_id)
);
CREATE INDEX events_uid ON events(uid);

CREATE TABLE event_versions (
    id             BIGSERIAL PRIMARY KEY,
    event_id       BIGINT      NOT NULL REFERENCES events(id),
    version_hash   TEXT        NOT NULL,
    message_id     BIGINT      NOT NULL REFERENCES messages(id),
    method         TEXT,
    sequence       BIGINT      NOT NULL,
    dtstamp        TIMESTAMPTZ,
    status         TEXT,
    start_at       TIMESTAMPTZ,
    end_at         TIMESTAMPTZ,
    data           TEXT        NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (event_id, version_hash)
);

CREATE TABLE version_messages (
    version_id     BIGINT NOT NULL REFERENCES event_versions(id),
    message_id     BIGINT NOT NULL REFERENCES messages(id),
    PRIMARY KEY (version_id, message_id)
);

CREATE TABLE decisions (
    id                 BIGSERIAL PRIMARY KEY,
    event_id           BIGINT      NOT NULL REFERENCES events(id),
    arrived_version_id BIGINT      NOT NULL REFERENCES event_versions(id),
    version_id         BIGINT      REFERENCES event_versions(id),
    message_id         BIGINT      NOT NULL REFERENCES messages(id),
    requester          TEXT,
    requester_authenticated BOOLEAN NOT NULL DEFAULT FALSE,
    eligible           BOOLEAN     NOT NULL,
    reasons            TEXT        NOT NULL,
    plan               TEXT,
    decided_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX decisions_event ON decisions(event_id);
CREATE INDEX decisions_arrived ON decisions(arrived_version_id);

CREATE TABLE jobs (
    id               BIGSERIAL PRIMARY KEY,
    tenant           TEXT        NOT NULL,
    event_uid        TEXT        NOT NULL,
    slot             TEXT        NOT NULL DEFAULT '',
    occurrence_start TIMESTAMPTZ NOT NULL,
    occurrence_end   TIMESTAMPTZ NOT NULL,
    kind             TEXT        NOT NULL,
    run_at           TIMESTAMPTZ NOT NULL,
    state            TEXT        NOT NULL,
    provider         TEXT        NOT NULL,
    meeting_url      TEXT        NOT NULL,
    flags            TEXT        NOT NULL,
    requesters       TEXT        NOT NULL,
    claimed_by       TEXT,
    lease_until      TIMESTAMPTZ,
    attempts         INTEGER     NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX jobs_due ON jobs(state, run_at);
CREATE INDEX jobs_target ON jobs(tenant, meeting_url, occurrence_start, kind);

CREATE TABLE job_links (
    id               BIGSERIAL PRIMARY KEY,
    job_id           BIGINT      NOT NULL REFERENCES jobs(id),
    tenant           TEXT        NOT NULL,
    event_uid        TEXT        NOT NULL,
    slot             TEXT        NOT NULL DEFAULT '',
    kind             TEXT        NOT NULL,
    requesters       TEXT        NOT NULL,
    UNIQUE (tenant, event_uid, slot, kind)
);
CREATE INDEX job_links_job ON job_links(job_id);

CREATE TABLE consent_declines (
    id               BIGSERIAL PRIMARY KEY,
    tenant           TEXT        NOT NULL,
    event_uid        TEXT        NOT NULL,
    slot             TEXT        NOT NULL DEFAULT '',
    job_id           BIGINT      REFERENCES jobs(id),
    declined_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant, event_uid, slot)
);
