-- Outcome replies to requesters (README.md, "Reply mail"), queued in the transaction
-- that took the decision and sent by the reply worker. Rendered when queued, so that
-- what is sent is what the decision said. `state` moves queued → sending → sent, or
-- → failed when the relay refuses the reply for good; a `sending` reply whose lease ran
-- out (its daemon stopped) is due again.
CREATE TABLE replies (
    id               INTEGER PRIMARY KEY,
    tenant           TEXT    NOT NULL,
    event_uid        TEXT    NOT NULL,
    recurrence_id    TEXT    NOT NULL DEFAULT '',
    message_id       INTEGER NOT NULL REFERENCES messages(id),  -- the mail answered
    recipient        TEXT    NOT NULL,                          -- the requester
    outcome          TEXT    NOT NULL,      -- scheduled | rescheduled | cancelled | refused
    fingerprint      TEXT    NOT NULL,      -- what will happen; equal to the last reply's: none is queued
    sender           TEXT    NOT NULL,      -- the assistant address
    subject          TEXT    NOT NULL,
    in_reply_to      TEXT,                  -- Message-ID of the answered mail, with <>
    thread_references TEXT,                 -- References of the reply
    body_text        TEXT    NOT NULL,
    body_html        TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT    NOT NULL,
    claimed_by       TEXT,
    lease_until      TEXT,
    last_error       TEXT,
    created_at       TEXT    NOT NULL,
    sent_at          TEXT,
    -- Processing a message again never queues a second reply about the same event.
    UNIQUE (message_id, tenant, event_uid, recurrence_id, recipient)
);
CREATE INDEX replies_due ON replies(state, next_attempt_at);
CREATE INDEX replies_recipient ON replies(recipient, created_at);
CREATE INDEX replies_event ON replies(tenant, event_uid, recurrence_id, recipient);
