-- R4 Subscriptions (src/service/subscriptions.rs).
-- subscription_access: for each Subscription, the resource type of its criteria (so a write
-- looks up only the subscriptions on its type) and the access of the principal that last wrote
-- it (its claims as JSON): notifications are matched with that principal's access.
CREATE TABLE subscription_access (
    subscription_id TEXT PRIMARY KEY,
    criteria_type TEXT NOT NULL,
    principal TEXT NOT NULL
);
CREATE INDEX subscription_access_type ON subscription_access (criteria_type);

-- The outbox: one row per notification, written in the transaction of the change that caused
-- it. A delivery worker leases rows (lease_owner, leased_until), delivers, and marks them
-- delivered (state 'delivered'), failed after the last attempt ('failed'), or dropped when the
-- subscription is no longer active ('dropped').
CREATE TABLE subscription_outbox (
    pk BIGSERIAL PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    version_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    leased_until BIGINT,
    lease_owner TEXT,
    finished_at BIGINT,
    last_error TEXT
);
CREATE INDEX subscription_outbox_pending ON subscription_outbox (next_attempt_at, pk)
    WHERE state = 'pending';
CREATE INDEX subscription_outbox_subscription ON subscription_outbox (subscription_id);
