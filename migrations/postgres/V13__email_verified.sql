-- Email verification (section 10.4 of the contract): whether an account proved it owns its
-- address. Every account that exists when this runs is verified (it was made before
-- verification existed); self-registered accounts start unverified from now on, accounts made
-- by create-user, import-users and the admin routes start verified.
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT TRUE;
