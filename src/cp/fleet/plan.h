// Plans and applies of the declarative fleet: desired state (a parsed spec::SpecSet for
// one apply set) against what was applied before (fleet_resources) and the live rows.
//
// Contract:
//  - compute_plan() only reads. Entries, sorted by kind (team, host, template, channel)
//    then name:
//      create  declared, not recorded (an existing unrecorded object of that name — made
//              through the REST API or seeded — is adopted; the message says so);
//      update  recorded with another content hash: field changes recorded -> desired;
//      delete  recorded in this apply set, no longer declared, and prune was asked (without
//              prune such resources are listed in Plan::unpruned instead);
//      drift   recorded with the same hash, but the live state differs from it: field
//              changes recorded -> live (actionable: apply writes the spec again), or an
//              observation apply cannot fix (a host not online, a template image missing on
//              a host — the reconciler's work; a registered host no spec declares, reported
//              once any host is declared).
//    A declared resource recorded by ANOTHER apply set is an error, as is a channel secret
//    the control plane cannot read: both are thrown as ApiError invalid_spec with
//    "diagnostics" ["file:line:column: message", ...] pointing at the declaration.
//  - apply() runs in the caller's transaction: locks the fleet revision, refuses
//    (ApiError revision_conflict) when it is not expected_revision, recomputes the plan
//    there (so what it applies is consistent with the database it commits to), writes the
//    actionable entries, records them, bumps the revision when something changed, records
//    the apply set and an audit entry, and NOTIFYs the reconciler. Applying the same specs
//    again finds nothing actionable and changes nothing (the revision stays).
// Thread-safety: functions use only the connection they are given.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "api/router.h"
#include "crypto/aead.h"
#include "events/providers.h"
#include "pg/connection.h"
#include "spec/spec.h"

namespace wrenn::cp::fleet {

struct PlanEntry {
  std::string action;  // create | update | delete | drift
  std::string kind;
  std::string name;
  std::string resource_id;  // "" for create
  std::string message;
  std::vector<spec::FieldChange> fields;
  bool actionable = true;  // apply acts on it (false: drift only the reconciler or an
                           // operator can resolve)
};

struct Plan {
  std::string apply_set;
  std::int64_t revision = 0;
  std::vector<PlanEntry> entries;
  std::vector<std::pair<std::string, std::string>> unpruned;  // (kind, name)
  bool applied = false;
  // Entries apply would act on.
  std::size_t actionable() const;
};

// Apply set names: [a-z0-9][a-z0-9._-]{0,62}.
bool valid_apply_set_name(std::string_view name);

Plan compute_plan(pg::Connection& c, const std::string& apply_set, const spec::SpecSet& desired,
                  bool prune);

// channel_settings: how channel destinations are checked (fleet_store.h WriteContext).
Plan apply(pg::Connection& tx, const std::string& apply_set, const spec::SpecSet& desired,
           bool prune, std::int64_t expected_revision, const Caller& caller,
           const crypto::AeadKey& key, const events::ProviderSettings& channel_settings);

// The wire form (see /v1/fleet/plan in fleet_routes.h).
boost::json::object plan_json(const Plan& plan);

}  // namespace wrenn::cp::fleet
