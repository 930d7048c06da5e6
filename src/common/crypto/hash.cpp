#include "crypto/hash.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "crypto/encoding.h"
#include "crypto/ossl.h"

namespace wrenn::crypto {

std::string sha256(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  detail::check(EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) == 1,
                "EVP_Digest(sha256)");
  return std::string(reinterpret_cast<char*>(md), len);
}

std::string sha256_hex(std::string_view data) {
  return hex_encode(sha256(data));
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  std::size_t len = 0;
  // EVP_Q_mac rejects a null key pointer even for an empty key.
  static const unsigned char kEmpty = 0;
  const void* key_ptr = key.empty() ? &kEmpty : static_cast<const void*>(key.data());
  unsigned char* res = EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key_ptr, key.size(),
                                 reinterpret_cast<const unsigned char*>(data.data()), data.size(),
                                 out, sizeof out, &len);
  detail::check(res != nullptr && len == kSha256Size, "EVP_Q_mac(HMAC-SHA256)");
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  return hex_encode(hmac_sha256(key, data));
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace wrenn::crypto
