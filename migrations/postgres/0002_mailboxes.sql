-- IMAP intake: where each watched mailbox stands. A message fetched from a mailbox is
-- stored in the same transaction that moves `last_uid` past it, so a restart neither skips
-- nor repeats a message. `mailbox` is "tenant/username@host:port/folder". Which daemon
-- watches a mailbox is a session advisory lock, not a row.
CREATE TABLE mailbox_state (
    mailbox       TEXT        PRIMARY KEY,
    uid_validity  BIGINT      NOT NULL,
    last_uid      BIGINT      NOT NULL,        -- highest UID taken in under uid_validity
    updated_at    TIMESTAMPTZ NOT NULL
);
