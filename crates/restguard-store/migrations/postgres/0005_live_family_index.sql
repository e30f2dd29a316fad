-- Family revocation only needs the members that can still be used: a consumed or revoked
-- refresh token is dead either way. Indexing only live tokens keeps the index the size of
-- the active sessions instead of the whole refresh history, so a rotation (one member leaves,
-- its replacement joins, side by side) rewrites one small index page, not a page per family.
DROP INDEX jwt_refresh_tokens_family;
CREATE INDEX jwt_refresh_tokens_live_family ON jwt_refresh_tokens (family)
    WHERE used_at IS NULL AND revoked_at IS NULL;
