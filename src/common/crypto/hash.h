// SHA-256, HMAC-SHA256 and constant-time comparison (OpenSSL EVP).
//
// Uses in the control plane: API keys and refresh tokens are stored as sha256_hex of the
// plaintext; OAuth state cookies and webhook signatures are hex HMAC-SHA256.
// Errors: Error(internal) only if OpenSSL itself fails.
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <string>
#include <string_view>

namespace wrenn::crypto {

inline constexpr std::size_t kSha256Size = 32;

// The 32-byte digest, raw and as 64 lowercase hex characters.
std::string sha256(std::string_view data);
std::string sha256_hex(std::string_view data);

// HMAC-SHA256(key, data): 32 raw bytes, and 64 lowercase hex characters.
std::string hmac_sha256(std::string_view key, std::string_view data);
std::string hmac_sha256_hex(std::string_view key, std::string_view data);

// True iff a and b are byte-for-byte equal. Runs in time independent of the contents (the
// lengths, which are not secret for MACs and digests, may leak). Use it for every
// comparison of a MAC, signature or secret token.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace wrenn::crypto
