-- 0001_init: the control plane's initial schema.
--
-- Conventions:
-- - Primary keys are the wire IDs themselves, stored as text: a prefix plus 25 base-36
--   characters ("team-0000000000000000000000000"); CHECK constraints keep malformed IDs
--   out. Templates, which the upstream API addresses by name only, get the prefix "tmpl-".
-- - Timestamps are timestamptz; enumerated states are text with CHECK constraints.
-- - Free-form maps are jsonb objects.
-- - Secrets are stored only as SHA-256 hex digests (API keys, host tokens), except the
--   control plane's own key material in cp_secrets.
-- Runs inside one transaction (see src/pg/migrate.h): no BEGIN/COMMIT here.

-- Sets updated_at on every UPDATE.
CREATE FUNCTION wrenn_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

CREATE TABLE teams (
  id         text PRIMARY KEY CHECK (id ~ '^team-[0-9a-z]{25}$'),
  name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
  slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  is_byoc    boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz
);

CREATE TABLE users (
  id            text PRIMARY KEY CHECK (id ~ '^usr-[0-9a-z]{25}$'),
  email         text NOT NULL CHECK (email LIKE '%_@_%'),
  password_hash text,
  name          text NOT NULL DEFAULT '',
  is_admin      boolean NOT NULL DEFAULT false,
  status        text NOT NULL DEFAULT 'active'
                CHECK (status IN ('inactive', 'active', 'disabled', 'deleted')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  deleted_at    timestamptz
);
-- One account per address, whatever its case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE TRIGGER users_updated_at BEFORE UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION wrenn_touch_updated_at();

CREATE TABLE users_teams (
  user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  team_id    text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  is_default boolean NOT NULL DEFAULT false,
  role       text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, user_id)
);
CREATE INDEX users_teams_user_id_idx ON users_teams (user_id);
-- At most one owner per team and one default team per user.
CREATE UNIQUE INDEX users_teams_one_owner ON users_teams (team_id) WHERE role = 'owner';
CREATE UNIQUE INDEX users_teams_one_default ON users_teams (user_id) WHERE is_default;

CREATE TABLE team_api_keys (
  id         text PRIMARY KEY CHECK (id ~ '^key-[0-9a-z]{25}$'),
  team_id    text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  name       text NOT NULL DEFAULT '',
  key_hash   text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),  -- sha256 hex
  key_prefix text NOT NULL,                                             -- "wrn_" + 6 hex
  created_by text REFERENCES users (id) ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_used  timestamptz
);
CREATE INDEX team_api_keys_team_id_idx ON team_api_keys (team_id);

CREATE TABLE hosts (
  id                text PRIMARY KEY CHECK (id ~ '^host-[0-9a-z]{25}$'),
  -- Declared hosts (specs) have a unique name; hosts created through the API may not.
  name              text UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
  type              text NOT NULL DEFAULT 'regular' CHECK (type IN ('regular', 'byoc')),
  team_id           text REFERENCES teams (id),
  provider          text NOT NULL DEFAULT '',
  availability_zone text NOT NULL DEFAULT '',
  arch              text NOT NULL DEFAULT '',
  cpu_cores         integer NOT NULL DEFAULT 0 CHECK (cpu_cores >= 0),
  memory_mb         integer NOT NULL DEFAULT 0 CHECK (memory_mb >= 0),
  disk_gb           integer NOT NULL DEFAULT 0 CHECK (disk_gb >= 0),
  address           text NOT NULL DEFAULT '',  -- host:port of the agent API
  runtimes          text[] NOT NULL DEFAULT '{}',
  labels            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
  status            text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'online', 'unreachable', 'draining', 'offline')),
  last_heartbeat_at timestamptz,
  metadata          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
  cert_fingerprint  text NOT NULL DEFAULT '',  -- sha256 hex of the agent certificate's DER
  cert_expires_at   timestamptz,
  created_by        text REFERENCES users (id) ON DELETE SET NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  CHECK (type = 'regular' OR team_id IS NOT NULL)  -- a BYOC host belongs to a team
);
CREATE INDEX hosts_status_idx ON hosts (status);
CREATE INDEX hosts_team_id_idx ON hosts (team_id);
CREATE TRIGGER hosts_updated_at BEFORE UPDATE ON hosts
  FOR EACH ROW EXECUTE FUNCTION wrenn_touch_updated_at();

-- Registration tokens: single use (used_at), short-lived. Only the hash is stored.
CREATE TABLE host_tokens (
  id         text PRIMARY KEY CHECK (id ~ '^htok-[0-9a-z]{25}$'),
  host_id    text NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
  token_hash text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
  created_by text REFERENCES users (id) ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  used_at    timestamptz
);
CREATE INDEX host_tokens_host_id_idx ON host_tokens (host_id);

-- Rotating refresh tokens of registered agents. Only the hash is stored.
CREATE TABLE host_refresh_tokens (
  id         text PRIMARY KEY CHECK (id ~ '^hrt-[0-9a-z]{25}$'),
  host_id    text NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
  token_hash text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz
);
CREATE INDEX host_refresh_tokens_host_id_idx ON host_refresh_tokens (host_id);

-- Templates and snapshots. Platform-team rows are global: other teams cannot reuse their
-- names (templates_platform_name).
CREATE TABLE templates (
  id           text PRIMARY KEY CHECK (id ~ '^tmpl-[0-9a-z]{25}$'),
  team_id      text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
  type         text NOT NULL DEFAULT 'base' CHECK (type IN ('base', 'snapshot')),
  vcpus        integer NOT NULL DEFAULT 1 CHECK (vcpus > 0),
  memory_mb    integer NOT NULL DEFAULT 512 CHECK (memory_mb > 0),
  size_bytes   bigint NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
  default_user text NOT NULL DEFAULT 'root',
  default_env  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(default_env) = 'object'),
  metadata     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (team_id, name)
);

CREATE FUNCTION templates_check_platform_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.team_id <> 'team-0000000000000000000000000' AND EXISTS (
       SELECT 1 FROM templates
        WHERE team_id = 'team-0000000000000000000000000' AND name = NEW.name) THEN
    RAISE EXCEPTION 'template name is reserved by a platform template'
      USING ERRCODE = 'unique_violation', CONSTRAINT = 'templates_platform_name';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER templates_platform_name BEFORE INSERT OR UPDATE OF team_id, name ON templates
  FOR EACH ROW EXECUTE FUNCTION templates_check_platform_name();

-- Capsules. Never deleted: stopped rows stay readable.
CREATE TABLE sandboxes (
  id              text PRIMARY KEY CHECK (id ~ '^cl-[0-9a-z]{25}$'),
  team_id         text NOT NULL REFERENCES teams (id),
  host_id         text REFERENCES hosts (id) ON DELETE SET NULL,
  template        text NOT NULL DEFAULT 'minimal',  -- the name it was created from
  template_id     text,                             -- no FK: templates may be deleted
  status          text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'starting', 'running', 'paused', 'hibernated',
                                    'stopped', 'missing', 'error')),
  vcpus           integer NOT NULL DEFAULT 1 CHECK (vcpus > 0),
  memory_mb       integer NOT NULL DEFAULT 512 CHECK (memory_mb > 0),
  disk_size_mb    integer NOT NULL DEFAULT 5120 CHECK (disk_size_mb > 0),
  timeout_sec     integer NOT NULL DEFAULT 0 CHECK (timeout_sec >= 0),  -- 0: never auto-pause
  guest_ip        text NOT NULL DEFAULT '',
  host_ip         text NOT NULL DEFAULT '',
  created_at      timestamptz NOT NULL DEFAULT now(),
  started_at      timestamptz,
  last_active_at  timestamptz,
  last_updated    timestamptz NOT NULL DEFAULT now(),
  metadata        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
  -- Create-request deduplication: a retried POST with the same key returns the same
  -- capsule; request_hash tells a retry from a different request reusing the key.
  idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
  request_hash    text
);
CREATE UNIQUE INDEX sandboxes_idempotency_key ON sandboxes (team_id, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX sandboxes_status_idx ON sandboxes (status);
CREATE INDEX sandboxes_host_status_idx ON sandboxes (host_id, status);
CREATE INDEX sandboxes_team_created_idx ON sandboxes (team_id, created_at DESC);

CREATE FUNCTION sandboxes_touch_last_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.last_updated := now();
  RETURN NEW;
END $$;
CREATE TRIGGER sandboxes_last_updated BEFORE UPDATE ON sandboxes
  FOR EACH ROW EXECUTE FUNCTION sandboxes_touch_last_updated();

-- Append-only audit trail. team_id has no foreign key so entries outlive their team.
CREATE TABLE audit_logs (
  id            text PRIMARY KEY CHECK (id ~ '^log-[0-9a-z]{25}$'),
  team_id       text NOT NULL,
  actor_type    text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'host', 'system')),
  actor_id      text,
  actor_name    text NOT NULL DEFAULT '',
  resource_type text NOT NULL,
  resource_id   text,
  action        text NOT NULL,
  scope         text NOT NULL DEFAULT 'team' CHECK (scope IN ('team', 'admin')),
  status        text NOT NULL DEFAULT 'success'
                CHECK (status IN ('success', 'info', 'warning', 'error')),
  metadata      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_team_created_idx ON audit_logs (team_id, created_at DESC, id DESC);
CREATE INDEX audit_logs_team_resource_idx
  ON audit_logs (team_id, resource_type, created_at DESC);

-- The control plane's own secrets (CA key, signing keys), as PEM or base64 text.
CREATE TABLE cp_secrets (
  name       text PRIMARY KEY,
  value      text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER cp_secrets_updated_at BEFORE UPDATE ON cp_secrets
  FOR EACH ROW EXECUTE FUNCTION wrenn_touch_updated_at();

-- The platform team owns global templates and platform-admin capsules.
INSERT INTO teams (id, name, slug)
  VALUES ('team-0000000000000000000000000', 'Platform', 'platform');
INSERT INTO templates (id, team_id, name, type, vcpus, memory_mb, size_bytes)
  VALUES ('tmpl-0000000000000000000000000', 'team-0000000000000000000000000', 'minimal',
          'base', 1, 512, 0);
