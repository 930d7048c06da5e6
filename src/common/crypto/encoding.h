// Binary-to-text encodings: hex, standard base64 (RFC 4648 §4, padded) and base64url
// (RFC 4648 §5, unpadded, as in JWTs). Binary data travels in std::string.
//
// Decoders are strict: they accept exactly what the matching encoder produces (no
// whitespace, no line breaks, no mixed alphabets, no non-zero padding bits, padding
// present for base64 and absent for base64url; hex accepts either case) and throw
// Error(invalid_argument) naming the encoding otherwise. Messages never echo the input,
// which is often a secret.
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <string>
#include <string_view>

namespace wrenn::crypto {

// Lowercase hex.
std::string hex_encode(std::string_view bytes);
std::string hex_decode(std::string_view text);

std::string base64_encode(std::string_view bytes);
std::string base64_decode(std::string_view text);

std::string base64url_encode(std::string_view bytes);
std::string base64url_decode(std::string_view text);

}  // namespace wrenn::crypto
