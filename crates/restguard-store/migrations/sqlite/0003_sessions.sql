-- Browser sessions (Django's django_session, server-side). The session id (the cookie value)
-- is stored only as a keyed digest (CONTRACT §10). Timestamps are INTEGER unix microseconds.

CREATE TABLE sessions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest     BLOB    NOT NULL UNIQUE,
    created    INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    user_agent TEXT    NOT NULL DEFAULT '',
    ip         TEXT    NULL
);

CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
