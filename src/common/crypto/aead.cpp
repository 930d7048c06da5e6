#include "crypto/aead.h"

#include <openssl/crypto.h>

#include <climits>
#include <cstring>

#include "crypto/encoding.h"
#include "crypto/ossl.h"
#include "crypto/random.h"

namespace wrenn::crypto {

namespace {

const unsigned char* bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

void check_size(std::size_t n) {
  // EVP_*Update take int lengths.
  if (n > static_cast<std::size_t>(INT_MAX) - 64) {
    throw Error(Code::kInvalidArgument, "aead: input too large");
  }
}

// Feeds the version byte and the caller's aad as additional authenticated data.
void add_aad(EVP_CIPHER_CTX* ctx, bool encrypt, std::string_view aad) {
  auto update = encrypt ? EVP_EncryptUpdate : EVP_DecryptUpdate;
  int len = 0;
  const unsigned char version = kAeadVersion;
  detail::check(update(ctx, nullptr, &len, &version, 1) == 1, "aead: aad");
  if (!aad.empty()) {
    detail::check(update(ctx, nullptr, &len, bytes(aad), static_cast<int>(aad.size())) == 1,
                  "aead: aad");
  }
}

Error auth_failed() {
  return Error(Code::kDataLoss, "aead: authentication failed");
}

// Wipes a std::string holding key material when it goes out of scope.
struct Wipe {
  std::string& s;
  ~Wipe() { OPENSSL_cleanse(s.data(), s.size()); }
};

}  // namespace

std::string seal(const AeadKey& key, std::string_view plaintext, std::string_view aad) {
  check_size(plaintext.size());
  check_size(aad.size());
  std::string out(kAeadOverhead + plaintext.size(), '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  o[0] = kAeadVersion;
  unsigned char* nonce = o + 1;
  unsigned char* ct = nonce + kAeadNonceSize;
  random_fill({nonce, kAeadNonceSize});

  detail::CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  detail::check(ctx != nullptr, "EVP_CIPHER_CTX_new");
  // GCM's default IV length is 12 bytes, so key and nonce can go in with the cipher.
  detail::check(EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nonce) == 1,
                "aead: init");
  add_aad(ctx.get(), true, aad);
  int len = 0;
  detail::check(EVP_EncryptUpdate(ctx.get(), ct, &len, bytes(plaintext),
                                  static_cast<int>(plaintext.size())) == 1,
                "aead: encrypt");
  int fin = 0;
  detail::check(EVP_EncryptFinal_ex(ctx.get(), ct + len, &fin) == 1, "aead: encrypt");
  detail::check(static_cast<std::size_t>(len + fin) == plaintext.size(), "aead: length");
  detail::check(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kAeadTagSize,
                                    ct + plaintext.size()) == 1,
                "aead: tag");
  return out;
}

std::string open(const AeadKey& key, std::string_view sealed, std::string_view aad) {
  check_size(aad.size());
  if (sealed.size() < kAeadOverhead) throw Error(Code::kDataLoss, "aead: sealed data too short");
  if (static_cast<unsigned char>(sealed[0]) != kAeadVersion) {
    throw Error(Code::kDataLoss, "aead: unsupported version");
  }
  check_size(sealed.size());
  const unsigned char* nonce = bytes(sealed) + 1;
  const unsigned char* ct = nonce + kAeadNonceSize;
  const std::size_t ct_len = sealed.size() - kAeadOverhead;
  const unsigned char* tag = ct + ct_len;

  detail::CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  detail::check(ctx != nullptr, "EVP_CIPHER_CTX_new");
  detail::check(EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nonce) == 1,
                "aead: init");
  add_aad(ctx.get(), false, aad);
  std::string out(ct_len, '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  int len = 0;
  detail::check(EVP_DecryptUpdate(ctx.get(), o, &len, ct, static_cast<int>(ct_len)) == 1,
                "aead: decrypt");
  // The tag is an input here; OpenSSL's prototype is not const-correct.
  unsigned char tag_copy[kAeadTagSize];
  std::memcpy(tag_copy, tag, kAeadTagSize);
  detail::check(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kAeadTagSize, tag_copy) == 1,
                "aead: tag");
  int fin = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), o + len, &fin) != 1) {
    detail::drain_errors();
    OPENSSL_cleanse(out.data(), out.size());
    throw auth_failed();
  }
  out.resize(static_cast<std::size_t>(len + fin));
  return out;
}

AeadKey parse_aead_key(std::string_view text) {
  auto is_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  };
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);

  std::string raw;
  Wipe wipe{raw};
  try {
    if (text.size() == 64) {
      raw = hex_decode(text);
    } else if (text.size() == 44) {
      raw = base64_decode(text);
    }
  } catch (const Error&) {
    raw.clear();
  }
  AeadKey key{};
  if (raw.size() != key.size()) {
    throw Error(Code::kInvalidArgument,
                "encryption key must be 64 hex characters or base64 of 32 bytes (got " +
                    std::to_string(text.size()) + " characters)");
  }
  std::memcpy(key.data(), raw.data(), key.size());
  return key;
}

AeadKey new_aead_key() {
  AeadKey key;
  random_fill(key);
  return key;
}

}  // namespace wrenn::crypto
