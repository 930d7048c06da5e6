-- Lifecycle events and their delivery to notification channels (src/cp/events/).
--
-- events is an outbox: a row is inserted in the same transaction as the state change it
-- reports, together with one pending row in deliveries per channel of the team that
-- subscribes to its type. The dispatcher claims due deliveries with FOR UPDATE SKIP LOCKED
-- (so replicas share the work), sends them, and records every attempt.

CREATE TABLE events (
  id         text PRIMARY KEY CHECK (id ~ '^ev-[0-9a-z]{25}$'),
  team_id    text NOT NULL,  -- no foreign key: an event outlives a deleted team's rows
  type       text NOT NULL,
  payload    json NOT NULL CHECK (json_typeof(payload) = 'object'),  -- json: sent byte for byte
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_team_created ON events (team_id, created_at, id);

CREATE TABLE deliveries (
  id              text PRIMARY KEY CHECK (id ~ '^dl-[0-9a-z]{25}$'),
  event_id        text NOT NULL REFERENCES events (id) ON DELETE CASCADE,
  channel_id      text NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
  state           text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'delivered', 'dropped')),
  attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  -- A claim is a lease: a replica that dies mid-delivery loses it when it expires, and
  -- another replica sends the delivery again (at least once).
  claimed_by      text,
  claim_expires   timestamptz,
  last_error      text NOT NULL DEFAULT '',
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (event_id, channel_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_channel ON deliveries (channel_id, created_at DESC, id DESC);
CREATE TRIGGER deliveries_updated_at BEFORE UPDATE ON deliveries
  FOR EACH ROW EXECUTE FUNCTION wrenn_touch_updated_at();

-- Every attempt of a delivery: what was sent (the X-Wrenn-Delivery id) and what came back.
CREATE TABLE delivery_attempts (
  delivery_id   text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
  attempt       integer NOT NULL CHECK (attempt >= 1),
  request_id    text NOT NULL,  -- X-Wrenn-Delivery of this attempt (a UUID)
  started_at    timestamptz NOT NULL,
  duration_ms   integer NOT NULL DEFAULT 0,
  status_code   integer,        -- NULL: no HTTP answer (connect error, timeout)
  error         text NOT NULL DEFAULT '',
  outcome       text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'dropped')),
  PRIMARY KEY (delivery_id, attempt)
);

-- Non-secret provider settings a target alone does not carry (matrix: the homeserver URL).
ALTER TABLE channels ADD COLUMN options jsonb NOT NULL DEFAULT '{}'
  CHECK (jsonb_typeof(options) = 'object');
-- REST channels: the events the caller subscribed with the upstream names are stored in
-- ours (src/cp/events/event.h); the CHECK keeps the column honest.
ALTER TABLE channels ADD CONSTRAINT channels_events_known CHECK (
  events <@ ARRAY['capsule.create', 'capsule.pause', 'capsule.resume', 'capsule.destroy',
                  'template.snapshot.create', 'template.snapshot.delete', 'host.up',
                  'host.down']::text[]);
