-- RP-initiated logout (CONTRACT §6): each application gets its own list of post-logout
-- redirect URIs, separate from its redirect URIs. Existing applications start with none: a
-- logout naming a URI is refused until an administrator registers it
-- (`restguard app update CLIENT_ID --post-logout-redirect-uri URI`). Space-separated, like
-- the other lists.
ALTER TABLE oauth_applications ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '';

-- Revoking a user's grant deletes their codes for the application; deleting a user cascades
-- to their codes. Both look codes up by user.
CREATE INDEX oauth_codes_user_id ON oauth_codes (user_id);
