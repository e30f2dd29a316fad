-- OAuth2 / OpenID Connect provider (Django OAuth Toolkit parity): applications, authorization
-- codes, access and refresh tokens. Client secrets, codes and tokens are stored only as keyed
-- digests (CONTRACT §10). Lists (grant types, redirect URIs, scopes) are space-separated TEXT.
-- Timestamps are INTEGER unix microseconds (UTC).

CREATE TABLE oauth_applications (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id          TEXT    NOT NULL UNIQUE,
    name               TEXT    NOT NULL,
    client_type        TEXT    NOT NULL,
    secret_digest      BLOB    NULL,
    grant_types        TEXT    NOT NULL,
    redirect_uris      TEXT    NOT NULL,
    allowed_scopes     TEXT    NOT NULL,
    skip_authorization INTEGER NOT NULL,
    algorithm          TEXT    NOT NULL,
    owner_id           INTEGER NULL REFERENCES users (id) ON DELETE SET NULL,
    created            INTEGER NOT NULL
);

CREATE TABLE oauth_codes (
    digest                BLOB    PRIMARY KEY NOT NULL,
    application_id        INTEGER NOT NULL REFERENCES oauth_applications (id) ON DELETE CASCADE,
    user_id               INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri          TEXT    NOT NULL,
    scopes                TEXT    NOT NULL,
    code_challenge        TEXT    NULL,
    code_challenge_method TEXT    NULL,
    nonce                 TEXT    NULL,
    auth_time             INTEGER NOT NULL,
    created               INTEGER NOT NULL,
    expires_at            INTEGER NOT NULL,
    used_at               INTEGER NULL,
    family                TEXT    NULL
);

CREATE INDEX oauth_codes_expires_at ON oauth_codes (expires_at);

CREATE TABLE oauth_tokens (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT    NOT NULL,
    digest         BLOB    NOT NULL UNIQUE,
    application_id INTEGER NOT NULL REFERENCES oauth_applications (id) ON DELETE CASCADE,
    user_id        INTEGER NULL REFERENCES users (id) ON DELETE CASCADE,
    scopes         TEXT    NOT NULL,
    family         TEXT    NOT NULL,
    created        INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER NULL,
    revoked_at     INTEGER NULL
);

CREATE INDEX oauth_tokens_family ON oauth_tokens (family);
CREATE INDEX oauth_tokens_user_id ON oauth_tokens (user_id);
CREATE INDEX oauth_tokens_application_id ON oauth_tokens (application_id);
CREATE INDEX oauth_tokens_expires_at ON oauth_tokens (expires_at);
