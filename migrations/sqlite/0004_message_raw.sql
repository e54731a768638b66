-- A message's bytes in a table of their own. SQLite rewrites a whole row on UPDATE, so
-- marking a message processed used to write its raw bytes again (about six WAL pages for
-- an 8 KB mail); now it writes the small row alone. (PostgreSQL keeps large values out of
-- line already, so its schema is unchanged.)
CREATE TABLE message_raw (
    message_id INTEGER PRIMARY KEY REFERENCES messages (id),
    raw        BLOB    NOT NULL
);
INSERT INTO message_raw (message_id, raw) SELECT id, raw FROM messages;
ALTER TABLE messages DROP COLUMN raw;
