// First-start bootstrap of a control plane database, and the control plane's own secrets.
//
// bootstrap() runs one transaction under the advisory lock kBootstrapLockKey, so any number
// of replicas may start at once; it is idempotent:
//  - the platform team exists (the migration seeds it);
//  - the JWT secret is JWT_SECRET when configured, else the one in cp_secrets ("jwt_secret",
//    generated once: 32 random bytes as hex) — every replica then signs with the same one;
//  - the encryption key (AES-256-GCM, sealing agent tokens at rest) is WRENN_ENCRYPTION_KEY
//    when configured, else cp_secrets "encryption_key" (generated once). A key kept in the
//    same database as what it protects only guards against leaks of single columns; set
//    WRENN_ENCRYPTION_KEY for real protection at rest;
//  - when the platform team has no API key, one is created and written ONCE to
//    $WRENN_DIR/admin-api-key (mode 0600, O_EXCL: never overwritten); only the path is
//    logged. If that file already exists (a start that wrote it and then failed to commit,
//    or a database reset), the key in it is stored instead of a new one ("adopted"); a file
//    that holds no API key stops the start with a message saying so.
// Errors: Error(invalid_argument) for a configured secret that is unusable (JWT_SECRET
// shorter than 32 characters, WRENN_ENCRYPTION_KEY not 64 hex / base64 of 32 bytes),
// Error(failed_precondition) for an unusable admin-api-key file, SqlError from the database.
#pragma once

#include <cstdint>
#include <string>

#include "crypto/aead.h"
#include "pg/pool.h"
#include "server_context.h"

namespace wrenn::cp::auth {

// pg_advisory_xact_lock key of the bootstrap transaction ('wrnnboot').
inline constexpr std::int64_t kBootstrapLockKey = 0x77726e6e626f6f74;

struct Secrets {
  std::string jwt_secret;
  crypto::AeadKey encryption_key{};
};

// Checks the configured secrets without touching the database (see Errors above).
void validate_configured_secrets(const CpConfig& config);

struct BootstrapResult {
  Secrets secrets;
  bool admin_key_created = false;  // a new key was written to admin_key_path
  bool admin_key_adopted = false;  // the key in admin_key_path was stored
  std::string admin_key_path;
};

BootstrapResult bootstrap(pg::Pool& db, const CpConfig& config);

}  // namespace wrenn::cp::auth
