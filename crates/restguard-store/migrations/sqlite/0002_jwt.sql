-- JWT (Simple JWT parity): refresh-token records with families, the jti blacklist, and
-- signing keys. jtis are stored only as keyed digests (CONTRACT §10).
-- Timestamps are INTEGER unix microseconds (UTC).

CREATE TABLE jwt_refresh_tokens (
    jti        BLOB    PRIMARY KEY NOT NULL,
    family     TEXT    NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER NULL,
    revoked_at INTEGER NULL
) WITHOUT ROWID;

CREATE INDEX jwt_refresh_tokens_family ON jwt_refresh_tokens (family);
CREATE INDEX jwt_refresh_tokens_user_id ON jwt_refresh_tokens (user_id);
CREATE INDEX jwt_refresh_tokens_expires_at ON jwt_refresh_tokens (expires_at);

CREATE TABLE jwt_blacklist (
    jti        BLOB    PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX jwt_blacklist_expires_at ON jwt_blacklist (expires_at);

CREATE TABLE jwt_signing_keys (
    kid         TEXT    PRIMARY KEY NOT NULL,
    algorithm   TEXT    NOT NULL,
    private_key BLOB    NOT NULL,
    public_jwk  TEXT    NULL,
    created     INTEGER NOT NULL,
    retired_at  INTEGER NULL
);
