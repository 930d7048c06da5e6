// Authenticated encryption of secrets at rest: AES-256-GCM (OpenSSL EVP).
//
// Sealed format (version 1): 0x01 || 12-byte random nonce || ciphertext || 16-byte tag.
// The version byte is covered by the tag (it is fed as additional data along with the
// caller's aad). Random 96-bit nonces are safe for up to about 2^32 seals under one key.
// Note: this is not the upstream's stored format (nonce || ciphertext || tag, no version);
// values sealed by the upstream control plane cannot be opened here.
//
// Errors:
//   open         — Error(data_loss, "aead: ...") for every input that does not
//                  authenticate: tampered bytes, wrong key, wrong aad, truncation, unknown
//                  version. The message does not say which (there is no way to tell apart
//                  a wrong key from tampering, and no reason to help an attacker try).
//   parse_aead_key — Error(invalid_argument) describing the accepted forms; the message
//                  never contains the text.
//   Error(internal) if OpenSSL itself fails.
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace wrenn::crypto {

using AeadKey = std::array<unsigned char, 32>;

inline constexpr unsigned char kAeadVersion = 1;
inline constexpr std::size_t kAeadNonceSize = 12;
inline constexpr std::size_t kAeadTagSize = 16;
// Bytes seal() adds to the plaintext.
inline constexpr std::size_t kAeadOverhead = 1 + kAeadNonceSize + kAeadTagSize;

// Encrypts and authenticates plaintext; aad is authenticated but not stored. Each call
// draws a fresh nonce, so sealing the same plaintext twice gives different bytes.
std::string seal(const AeadKey& key, std::string_view plaintext, std::string_view aad = {});

// Inverse of seal with the same key and aad.
std::string open(const AeadKey& key, std::string_view sealed, std::string_view aad = {});

// A key from configuration text (e.g. WRENN_ENCRYPTION_KEY): exactly 64 hex characters
// (either case), or standard padded base64 of exactly 32 bytes. Leading and trailing ASCII
// whitespace (a newline from a file) is ignored; anything else is rejected.
AeadKey parse_aead_key(std::string_view text);

// A fresh random key.
AeadKey new_aead_key();

}  // namespace wrenn::crypto
