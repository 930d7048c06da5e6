#include "auth/bootstrap.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string_view>

#include "crypto/encoding.h"
#include "crypto/ids.h"
#include "crypto/random.h"
#include "error.h"
#include "log.h"
#include "private_file.h"
#include "store/api_keys.h"
#include "store/sql.h"
#include "store/teams.h"

namespace wrenn::cp::auth {

namespace {

constexpr std::size_t kMinJwtSecret = 32;

std::string secret(pg::Connection& c, const std::string& name, const std::string& fresh) {
  c.exec("INSERT INTO cp_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name,
         fresh);
  return std::string(c.exec("SELECT value FROM cp_secrets WHERE name = $1", name).text(0, 0));
}

// Reads a small file; nullopt when it does not exist.
std::optional<std::string> read_small(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    throw errno_error(errno, "open " + path);
  }
  std::string out;
  char buf[256];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > 4096) break;
  }
  ::close(fd);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r' || out.back() == ' '))
    out.pop_back();
  return out;
}

void write_once(const std::string& path, const std::string& content) {
  if (!create_private_file(path, content + "\n", {.fsync = true, .owner = {}}))
    throw Error(Code::kAlreadyExists, path + " already exists");
}

}  // namespace

void validate_configured_secrets(const CpConfig& config) {
  if (!config.jwt_secret.empty() && config.jwt_secret.size() < kMinJwtSecret)
    throw Error(Code::kInvalidArgument,
                "JWT_SECRET must be at least 32 characters long (it is " +
                    std::to_string(config.jwt_secret.size()) +
                    "); unset it to have wrenn-cp generate one and keep it in the database");
  if (!config.encryption_key.empty()) {
    try {
      (void)crypto::parse_aead_key(config.encryption_key);
    } catch (const Error&) {
      throw Error(Code::kInvalidArgument,
                  "WRENN_ENCRYPTION_KEY must be 64 hex characters or base64 of 32 bytes "
                  "(e.g. `openssl rand -hex 32`)");
    }
  }
}

BootstrapResult bootstrap(pg::Pool& db, const CpConfig& config) {
  validate_configured_secrets(config);
  const std::string key_path = config.wrenn_dir + "/admin-api-key";
  return db.with_transaction([&](pg::Connection& c) {
    BootstrapResult out;
    out.admin_key_path = key_path;
    c.exec("SELECT pg_advisory_xact_lock($1)", kBootstrapLockKey);
    store::ensure_platform_team(c);

    out.secrets.jwt_secret = config.jwt_secret.empty()
                                 ? secret(c, "jwt_secret", crypto::random_hex(32))
                                 : config.jwt_secret;
    const std::string enc =
        config.encryption_key.empty()
            ? secret(c, "encryption_key",
                     crypto::hex_encode(std::string_view(
                         reinterpret_cast<const char*>(crypto::new_aead_key().data()), 32)))
            : config.encryption_key;
    out.secrets.encryption_key = crypto::parse_aead_key(enc);

    const std::string platform(store::kPlatformTeamId);
    if (!store::team_has_api_key(c, platform)) {
      if (auto existing = read_small(key_path)) {
        if (!ids::looks_like_api_key(*existing))
          throw Error(Code::kFailedPrecondition,
                      key_path +
                          " exists but holds no API key; move it away so that wrenn-cp can "
                          "write the platform admin key there");
        store::adopt_api_key(c, platform, "admin", *existing);
        out.admin_key_adopted = true;
      } else {
        auto key = store::create_api_key(c, platform, "admin");
        write_once(key_path, key.plaintext);
        out.admin_key_created = true;
      }
    }
    return out;
  });
}

}  // namespace wrenn::cp::auth
