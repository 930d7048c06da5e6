#include "state.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstring>

#include "error.h"

namespace wrenn::envd {

State::State(std::string etc_dir) : users_(std::move(etc_dir)) {}

bool State::token_matches(std::string_view c) const {
  if (token_.empty() || c.size() != token_.size()) return false;
  return CRYPTO_memcmp(c.data(), token_.data(), c.size()) == 0;
}

void State::set_token(std::string t) {
  OPENSSL_cleanse(token_.data(), token_.size());
  token_ = std::move(t);
}

Identity State::identity(std::optional<std::string> explicit_user) const {
  Identity id;
  id.user = users_.require(explicit_user && !explicit_user->empty() ? *explicit_user : default_user_);
  id.workdir = default_workdir_;
  return id;
}

std::optional<std::string> State::basic_auth_user(std::string_view h) {
  if (h.empty()) return std::nullopt;
  constexpr std::string_view kBasic = "Basic ";
  if (h.size() < kBasic.size() || strncasecmp(h.data(), "basic ", kBasic.size()) != 0)
    throw Error(Code::kUnauthenticated, "Authorization header must use the Basic scheme");
  auto b64 = h.substr(kBasic.size());
  while (!b64.empty() && b64.front() == ' ') b64.remove_prefix(1);
  if (b64.size() > 1024) throw Error(Code::kUnauthenticated, "Authorization header is too long");
  std::string out(b64.size() / 4 * 3 + 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
  if (n < 0 || b64.size() % 4 != 0) throw Error(Code::kUnauthenticated, "Authorization header is not valid base64");
  // EVP_DecodeBlock counts padding bytes as output: trim them.
  std::size_t pad = 0;
  if (!b64.empty() && b64.back() == '=') ++pad;
  if (b64.size() > 1 && b64[b64.size() - 2] == '=') ++pad;
  out.resize(static_cast<std::size_t>(n) - pad);
  auto colon = out.find(':');
  std::string user = colon == std::string::npos ? out : out.substr(0, colon);
  if (user.empty()) throw Error(Code::kUnauthenticated, "Authorization header names no user");
  return user;
}

}  // namespace wrenn::envd
