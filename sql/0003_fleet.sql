-- 0003_fleet: the declarative fleet (issue 5). Desired state applied from TOML specs
-- (src/spec) lives in fleet_resources, one row per (kind, name), each owned by exactly one
-- apply set; the rows of the kinds themselves (teams, hosts, templates, channels) are the
-- live objects the apply writes and the reconciler converges.

-- The fleet's revision: bumped by every apply that changes something. A plan carries the
-- revision it was computed at; an apply whose revision is no longer current is refused
-- (a concurrent apply won), so two applies never interleave.
CREATE TABLE fleet_revision (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  revision  bigint NOT NULL DEFAULT 0 CHECK (revision >= 0)
);
INSERT INTO fleet_revision (singleton, revision) VALUES (true, 0);

-- Apply sets: named groups of resources applied together (default: the spec directory's
-- name). The inventory is fleet_resources.apply_set: --prune deletes exactly the rows of
-- its set that the files no longer declare.
CREATE TABLE apply_sets (
  name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
  revision    bigint NOT NULL,              -- the fleet revision of its last change
  applied_at  timestamptz NOT NULL DEFAULT now(),
  applied_by  text NOT NULL DEFAULT ''       -- actor name of the last apply
);

CREATE TABLE fleet_resources (
  kind               text NOT NULL CHECK (kind IN ('host', 'template', 'team', 'channel')),
  name               text NOT NULL,
  apply_set          text NOT NULL REFERENCES apply_sets (name),
  resource_id        text NOT NULL,          -- host-…, tmpl-…, team-…, ch-…
  spec               jsonb NOT NULL CHECK (jsonb_typeof(spec) = 'object'),  -- canonical form
  spec_hash          text NOT NULL CHECK (spec_hash ~ '^[0-9a-f]{64}$'),
  generation         bigint NOT NULL DEFAULT 1,  -- +1 whenever spec_hash changes
  applied_revision   bigint NOT NULL,
  applied_at         timestamptz NOT NULL DEFAULT now(),
  -- Written by the reconciler: {"phase": "...", "message": "...", "conditions":
  -- [{"type", "status": "True|False|Unknown", "reason", "message", "last_transition"}]}.
  status             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(status) = 'object'),
  observed_generation bigint NOT NULL DEFAULT 0,
  status_changed_at  timestamptz,
  PRIMARY KEY (kind, name)
);
CREATE INDEX fleet_resources_apply_set ON fleet_resources (apply_set);
CREATE UNIQUE INDEX fleet_resources_resource_id ON fleet_resources (resource_id);

-- Hosts: the operator's scheduling state (independent of the observed status), the
-- runtime preference and capacity overrides from the host spec.
ALTER TABLE hosts
  ADD COLUMN state text NOT NULL DEFAULT 'active'
    CHECK (state IN ('active', 'cordoned', 'draining')),
  ADD COLUMN runtime_preference text NOT NULL DEFAULT 'auto',
  -- {"vcpus", "memory_mb", "disk_gb", "max_sandboxes"}: each replaces the detected value.
  ADD COLUMN capacity_override jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(capacity_override) = 'object');

-- Teams: limits ({"concurrent_sandboxes", "vcpus", "memory_mb"}; absent: unlimited).
ALTER TABLE teams
  ADD COLUMN limits jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(limits) = 'object');

-- API keys declared in a team spec (by hash): `managed` keys are added and removed by
-- apply; keys made through the REST API are never touched by it.
ALTER TABLE team_api_keys ADD COLUMN managed boolean NOT NULL DEFAULT false;

-- Notification channels. Secrets are stored only sealed (AES-256-GCM under the control
-- plane's encryption key, base64), with the references they were read from.
CREATE TABLE channels (
  id             text PRIMARY KEY CHECK (id ~ '^ch-[0-9a-z]{25}$'),
  team_id        text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
  provider       text NOT NULL CHECK (provider IN ('webhook', 'slack', 'discord', 'teams',
                                                   'google-chat', 'telegram', 'matrix')),
  target         text NOT NULL,
  events         text[] NOT NULL DEFAULT '{}',
  secret_refs    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(secret_refs) = 'object'),
  secrets_sealed text NOT NULL DEFAULT '',
  apply_set      text,  -- the apply set that declares it; NULL: made through the REST API
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (team_id, name)
);
CREATE TRIGGER channels_updated_at BEFORE UPDATE ON channels
  FOR EACH ROW EXECUTE FUNCTION wrenn_touch_updated_at();

-- Templates declared in specs are built by the reconciler on every matching host: one row
-- per (template, host) with the spec hash it was built from, its state and the build log.
CREATE TABLE template_builds (
  template_id text NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
  host_id     text NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
  spec_hash   text NOT NULL,
  state       text NOT NULL DEFAULT 'pending'
              CHECK (state IN ('pending', 'building', 'ready', 'failed', 'missing')),
  message     text NOT NULL DEFAULT '',
  log         text NOT NULL DEFAULT '',  -- the build's output (last 64 KiB)
  attempts    integer NOT NULL DEFAULT 0,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (template_id, host_id)
);
CREATE INDEX template_builds_host ON template_builds (host_id);
