-- IMAP intake: where each watched mailbox stands. A message fetched from a mailbox is
-- stored in the same transaction that moves `last_uid` past it, so a restart neither skips
-- nor repeats a message. `mailbox` is "tenant/username@host:port/folder".
CREATE TABLE mailbox_state (
    mailbox       TEXT    PRIMARY KEY,
    uid_validity  INTEGER NOT NULL,
    last_uid      INTEGER NOT NULL,            -- highest UID taken in under uid_validity
    updated_at    TEXT    NOT NULL
);
