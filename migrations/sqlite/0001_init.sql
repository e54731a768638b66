-- Times are TEXT in one fixed RFC 3339 UTC form ("2026-12-03T13:17:57.123Z") so that
-- string order is time order.

-- Every message exactly as received. Only `status`, `outcome`, `error` and
-- `processed_at` ever change.
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    sha256        TEXT    NOT NULL UNIQUE,
    received_at   TEXT    NOT NULL,
    source        TEXT    NOT NULL,            -- file | smtp | imap
    envelope_from TEXT,
    envelope_rcpts TEXT   NOT NULL,            -- JSON array of addresses
    message_id    TEXT,
    size          INTEGER NOT NULL,
    raw           BLOB    NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'received', -- received | processed | failed
    outcome       TEXT,                        -- JSON: whole-message reasons and counts
    error         TEXT,
    processed_at  TEXT
);
CREATE INDEX messages_status ON messages(status);

-- One row per (tenant, UID, RECURRENCE-ID); '' when there is no RECURRENCE-ID.
CREATE TABLE events (
    id            INTEGER PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    uid           TEXT    NOT NULL,
    recurrence_id TEXT    NOT NULL DEFAULT '',
    created_at    TEXT    NOT NULL,
    UNIQUE (tenant, uid, recurrence_id)
);
CREATE INDEX events_uid ON events(uid);

-- Append-only: every distinct version of an event, in arrival order (id).
CREATE TABLE event_versions (
    id            INTEGER PRIMARY KEY,
    event_id      INTEGER NOT NULL REFERENCES events(id),
    version_hash  TEXT    NOT NULL,
    message_id    INTEGER NOT NULL REFERENCES messages(id),
    method        TEXT,
    sequence      INTEGER NOT NULL,
    dtstamp       TEXT,
    status        TEXT,
    start_at      TEXT,
    end_at        TEXT,
    data          TEXT    NOT NULL,            -- JSON EventVersion
    received_at   TEXT    NOT NULL,
    UNIQUE (event_id, version_hash)
);

-- Every message that carried a version, including re-forwards of the same version.
CREATE TABLE version_messages (
    version_id    INTEGER NOT NULL REFERENCES event_versions(id),
    message_id    INTEGER NOT NULL REFERENCES messages(id),
    PRIMARY KEY (version_id, message_id)
);

-- Append-only: each decision taken, for whom, on which current version.
CREATE TABLE decisions (
    id            INTEGER PRIMARY KEY,
    event_id      INTEGER NOT NULL REFERENCES events(id),
    arrived_version_id INTEGER NOT NULL REFERENCES event_versions(id), -- the version the message carried
    version_id    INTEGER REFERENCES event_versions(id),  -- the current version decided on
    message_id    INTEGER NOT NULL REFERENCES messages(id),
    requester     TEXT,
    requester_authenticated INTEGER NOT NULL DEFAULT 0,
    eligible      INTEGER NOT NULL,
    reasons       TEXT    NOT NULL,            -- JSON array of {code, message}
    plan          TEXT,                        -- JSON plan or NULL
    decided_at    TEXT    NOT NULL
);
CREATE INDEX decisions_event ON decisions(event_id);
CREATE INDEX decisions_arrived ON decisions(arrived_version_id);

-- Capture jobs, one per meeting link, start and kind while active. `state` moves
-- scheduled → claimed → done | failed, or → cancelled; a claimed job whose lease runs out
-- is claimable again.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    tenant           TEXT    NOT NULL,
    event_uid        TEXT    NOT NULL,
    slot             TEXT    NOT NULL DEFAULT '',  -- occurrence identity within a series
    occurrence_start TEXT    NOT NULL,
    occurrence_end   TEXT    NOT NULL,
    kind             TEXT    NOT NULL,             -- bot_join | cloud_fetch
    run_at           TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    provider         TEXT    NOT NULL,
    meeting_url      TEXT    NOT NULL,
    flags            TEXT    NOT NULL,             -- JSON array
    requesters       TEXT    NOT NULL,             -- JSON array of addresses
    claimed_by       TEXT,                         -- recorder holding the lease
    lease_until      TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL
);
CREATE INDEX jobs_due ON jobs(state, run_at);
CREATE INDEX jobs_target ON jobs(tenant, meeting_url, occurrence_start, kind);

-- Which (UID, slot) occurrences a job records. Two people forwarding their own copies
-- of one meeting (two UIDs, same link and start) share one job: one bot, not two.
-- `tenant, event_uid, slot` of `jobs` name the first of them.
CREATE TABLE job_links (
    id               INTEGER PRIMARY KEY,
    job_id           INTEGER NOT NULL REFERENCES jobs(id),
    tenant           TEXT    NOT NULL,
    event_uid        TEXT    NOT NULL,
    slot             TEXT    NOT NULL DEFAULT '',
    kind             TEXT    NOT NULL,
    requesters       TEXT    NOT NULL,             -- JSON array: this UID's requesters
    UNIQUE (tenant, event_uid, slot, kind)
);
CREATE INDEX job_links_job ON job_links(job_id);

-- Occurrences a participant declined recording for ("join but don't record"): no job
-- is planned for them again.
CREATE TABLE consent_declines (
    id               INTEGER PRIMARY KEY,
    tenant           TEXT    NOT NULL,
    event_uid        TEXT    NOT NULL,
    slot             TEXT    NOT NULL DEFAULT '',
    job_id           INTEGER REFERENCES jobs(id),
    declined_at      TEXT    NOT NULL,
    UNIQUE (tenant, event_uid, slot)
);
