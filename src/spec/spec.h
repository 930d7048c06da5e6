// The declarative fleet's spec kinds (host, template, team, channel): parse, validate,
// normalise, canonical JSON, content hash and field-level comparison.
//
// Contract:
//  - parse_spec_files() is pure: it takes (filename, text) pairs and does no I/O. It parses
//    every file with toml++, checks every resource and every cross-reference, and returns
//    the normalised SpecSet together with EVERY problem found (not just the first), each
//    as a Diagnostic "file:line:column: message", sorted by (file, line, column, message).
//    The SpecSet is meaningful only when the diagnostics are empty; with diagnostics it
//    holds whatever parsed well enough (callers must not apply it).
//  - Files combine by plain union: each file may hold any kinds, in any order; files are
//    processed in name order, so the "first declared" of a duplicate is the one in the
//    earlier file (or earlier line).
//  - Normalisation: defaults are applied (see specs/README.md for every field), maps
//    (labels, env, secrets, present_on) are sorted by key, lists whose order is
//    meaningless (members, api_keys, events) are sorted; build steps keep their order.
//  - to_json() gives each resource's canonical form (objects with keys in sorted order,
//    every field present, defaults filled in); content_hash() is SHA-256 (lowercase hex)
//    of its serialisation, so two specs that differ only in key order, table layout or
//    spelled-out defaults hash alike.
//  - field_changes() compares two canonical forms field by field (pure).
//  - load_spec_dir() is the only I/O: it reads the *.toml files directly in a directory
//    (not recursive: sub-directories are for the operator's own use, e.g. drafts) in
//    name order and calls parse_spec_files(). An unreadable directory or file is a
//    diagnostic, not an exception.
// Thread-safety: all functions are pure or only read files; safe from any thread.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wrenn::spec {

// One input file: a name used in diagnostics and its TOML text.
struct SourceFile {
  std::string name;
  std::string text;
};

// Where something was written (1-based line and column).
struct Position {
  std::string file;
  int line = 0;
  int column = 0;
};

struct Diagnostic {
  std::string file;
  int line = 0;
  int column = 0;
  std::string message;
  // "file:line:column: message".
  std::string str() const;
  bool operator==(const Diagnostic&) const = default;
};

// Source positions of a resource: the [[kind]] header and each key written (by its path,
// e.g. "limits.vcpus", "members.0.email"). Not part of the canonical form or the hash.
struct Origin {
  Position at;
  std::map<std::string, Position> fields;
  // The field's position, or the resource's when the field was not written.
  const Position& of(const std::string& field) const;
};

// The image builders under images/ a template may start from (kept in sync with that
// directory by test/spec/spec_test.cpp).
inline const std::vector<std::string> kImageBuilders = {"busybox", "debian"};
// The events a channel may subscribe to.
inline const std::vector<std::string> kChannelEvents = {"capsule.create",
                                                        "capsule.pause",
                                                        "capsule.resume",
                                                        "capsule.destroy",
                                                        "template.snapshot.create",
                                                        "template.snapshot.delete",
                                                        "host.up",
                                                        "host.down"};
// The team that owns global (platform) templates; its templates are visible to all teams.
inline constexpr std::string_view kPlatformTeam = "platform";
// The platform template seeded by sql/0001_init.sql: it exists (and its name is reserved)
// whether or not a spec declares it, like the platform team.
inline constexpr std::string_view kSeedTemplate = "minimal";

struct HostCapacity {  // overrides of what the agent detects; unset: detected value
  std::optional<std::int64_t> vcpus;
  std::optional<std::int64_t> memory_mb;
  std::optional<std::int64_t> disk_gb;
  std::optional<std::int64_t> max_sandboxes;
};

struct HostSpec {
  std::string name;
  std::string address;           // "ip:port" or "[ipv6]:port" of the agent API
  std::string runtime = "auto";  // auto | ns | firecracker | cloud-hypervisor
  std::map<std::string, std::string> labels;
  HostCapacity capacity;
  std::string state = "active";  // active | cordoned | draining
  Origin origin;
};

struct ReadinessSpec {
  std::string command;  // exit status 0 = ready
  std::int64_t timeout_sec = 60;
  std::int64_t interval_ms = 500;
};

struct TemplateSpec {
  std::string name;
  std::string team;
  std::string base;   // another template's name; exactly one of base and image is set
  std::string image;  // an image builder (kImageBuilders)
  std::int64_t vcpus = 1;
  std::int64_t memory_mb = 512;
  std::int64_t disk_mb = 4096;
  std::string user = "root";
  std::string workdir;  // empty: the user's home directory
  std::map<std::string, std::string> env;
  std::vector<std::string> build;  // shell commands, in order, in a build sandbox
  std::string start;               // empty: nothing started
  std::optional<ReadinessSpec> ready;
  std::map<std::string, std::string> present_on;  // host label selector; empty: every host
  Origin origin;
};

struct MemberSpec {
  std::string email;            // lower-cased
  std::string role = "member";  // owner | admin | member
};

struct ApiKeySpec {
  std::string name;
  std::string sha256;  // 64 lowercase hex: SHA-256 of the key's plaintext
};

struct TeamLimits {  // unset: unlimited
  std::optional<std::int64_t> concurrent_sandboxes;
  std::optional<std::int64_t> vcpus;
  std::optional<std::int64_t> memory_mb;
};

struct TeamSpec {
  std::string name;          // the team's slug
  std::string display_name;  // default: name
  std::vector<MemberSpec> members;
  TeamLimits limits;
  std::vector<ApiKeySpec> api_keys;
  Origin origin;
};

// A secret is never written in a spec: it names where the control plane reads it.
struct SecretRef {
  std::string env;   // an environment variable of the control plane, or
  std::string file;  // an absolute path on the control plane
};

struct ChannelSpec {
  std::string name;
  std::string team;
  std::string provider;  // webhook | slack | discord | teams | google-chat | telegram | matrix
  std::string target;    // provider-specific, never a credential
  std::map<std::string, SecretRef> secrets;
  std::vector<std::string> events;
  // matrix only: the homeserver's http(s) URL, without a trailing "/"; default
  // default_matrix_homeserver(target). Empty for the other providers.
  std::string homeserver;
  Origin origin;
};

// "https://<server part of the room>" ("!abc:example.org" -> "https://example.org"); "" when
// the room has no server part.
std::string default_matrix_homeserver(std::string_view room);

struct SpecSet {
  std::vector<HostSpec> hosts;
  std::vector<TemplateSpec> templates;
  std::vector<TeamSpec> teams;
  std::vector<ChannelSpec> channels;
};

struct ParseResult {
  SpecSet set;
  std::vector<Diagnostic> diagnostics;
  bool ok() const { return diagnostics.empty(); }
};

ParseResult parse_spec_files(const std::vector<SourceFile>& files);
ParseResult load_spec_dir(const std::filesystem::path& dir);

// Canonical forms: every field, keys sorted, unset optionals as null.
boost::json::object to_json(const HostSpec&);
boost::json::object to_json(const TemplateSpec&);
boost::json::object to_json(const TeamSpec&);
// A channel's canonical form has "homeserver" only for matrix (other providers have none).
boost::json::object to_json(const ChannelSpec&);

// Serialisation with object keys sorted at every level (the input need not be sorted).
std::string canonical_json(const boost::json::value&);
// SHA-256 (lowercase hex) of canonical_json(v).
std::string content_hash(const boost::json::value&);

struct FieldChange {
  std::string path;              // dotted; keys that are not [a-z0-9_-]+ are quoted: labels."a.b"
  boost::json::value old_value;  // null when absent
  boost::json::value new_value;  // null when absent
  bool operator==(const FieldChange&) const = default;
};
// Leaf-level differences between two canonical forms, sorted by path. Objects are
// compared key by key, recursively; arrays and scalars as whole values.
std::vector<FieldChange> field_changes(const boost::json::object& old_obj,
                                       const boost::json::object& new_obj);

}  // namespace wrenn::spec
