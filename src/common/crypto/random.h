// Cryptographically secure random bytes from OpenSSL's DRBG (RAND_bytes).
//
// Errors: Error(internal) when the generator fails (it is not expected to on Linux).
// Thread-safety: every function may be called from any thread concurrently.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace wrenn::crypto {

// Fills `out` with random bytes.
void random_fill(std::span<unsigned char> out);

// n random bytes (binary, in a std::string).
std::string random_bytes(std::size_t n);

// nbytes random bytes as 2*nbytes lowercase hex characters; e.g. random_hex(32) is a
// 64-character registration or refresh token.
std::string random_hex(std::size_t nbytes);

}  // namespace wrenn::crypto
