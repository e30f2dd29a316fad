-- restguard initial schema (SQLite).
-- Timestamps are INTEGER unix microseconds (UTC); booleans are INTEGER 0/1.

CREATE TABLE users (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    username               TEXT    NOT NULL UNIQUE,
    email                  TEXT    NOT NULL DEFAULT '',
    first_name             TEXT    NOT NULL DEFAULT '',
    last_name              TEXT    NOT NULL DEFAULT '',
    password               TEXT    NOT NULL,
    is_active              INTEGER NOT NULL DEFAULT 1,
    is_staff               INTEGER NOT NULL DEFAULT 0,
    is_superuser           INTEGER NOT NULL DEFAULT 0,
    date_joined            INTEGER NOT NULL,
    last_login             INTEGER NULL,
    credentials_changed_at INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name      TEXT    NOT NULL DEFAULT '',
    prefix    TEXT    NOT NULL,
    digest    BLOB    NOT NULL UNIQUE,
    created   INTEGER NOT NULL,
    last_used INTEGER NULL,
    expiry    INTEGER NULL
);

CREATE INDEX api_tokens_user_id ON api_tokens (user_id);

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);
