-- JWT (Simple JWT parity): refresh-token records with families, the jti blacklist, and
-- signing keys (PostgreSQL, mirroring migrations/sqlite/0002_jwt.sql). jtis are stored only
-- as keyed digests (CONTRACT §10). Timestamps are BIGINT unix microseconds (UTC).

CREATE TABLE jwt_refresh_tokens (
    jti        BYTEA  PRIMARY KEY NOT NULL,
    family     TEXT   NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created    BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT NULL,
    revoked_at BIGINT NULL
);

CREATE INDEX jwt_refresh_tokens_family ON jwt_refresh_tokens (family);
CREATE INDEX jwt_refresh_tokens_user_id ON jwt_refresh_tokens (user_id);
CREATE INDEX jwt_refresh_tokens_expires_at ON jwt_refresh_tokens (expires_at);

CREATE TABLE jwt_blacklist (
    jti        BYTEA  PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX jwt_blacklist_expires_at ON jwt_blacklist (expires_at);

CREATE TABLE jwt_signing_keys (
    kid         TEXT   PRIMARY KEY NOT NULL,
    algorithm   TEXT   NOT NULL,
    private_key BYTEA  NOT NULL,
    public_jwk  TEXT   NULL,
    created     BIGINT NOT NULL,
    retired_at  BIGINT NULL
);
