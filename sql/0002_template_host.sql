-- Snapshot templates live on the host they were taken on (no replication between hosts):
-- templates.host_id names it, and capsules created from such a template are placed there.
-- NULL for base templates (present on every host). A deleted host takes its snapshots'
-- files with it; the row then stays with host_id NULL and cannot start capsules.
ALTER TABLE templates ADD COLUMN host_id text REFERENCES hosts (id) ON DELETE SET NULL;
CREATE INDEX templates_host ON templates (host_id) WHERE host_id IS NOT NULL;
