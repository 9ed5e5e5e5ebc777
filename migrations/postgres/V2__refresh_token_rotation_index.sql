-- Cleanup deletes rotated-away refresh tokens past retention; index them.
CREATE INDEX refresh_tokens_rotated ON refresh_tokens (rotated_at) WHERE rotated_at IS NOT NULL;
