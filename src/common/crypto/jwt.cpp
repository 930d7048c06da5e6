#include "crypto/jwt.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <optional>

#include "crypto/encoding.h"
#include "crypto/hash.h"
#include "error.h"

namespace wrenn::crypto {

namespace {

namespace json = boost::json;

// base64url of {"alg":"HS256","typ":"JWT"}.
constexpr std::string_view kHeader = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

Error reject(std::string_view reason) {
  return Error(Code::kUnauthenticated, "jwt: " + std::string(reason));
}

void require_secret(std::string_view secret) {
  if (secret.empty()) throw Error(Code::kInvalidArgument, "jwt: empty secret");
}

// NumericDate as seconds; nullopt for anything that is not a finite number.
std::optional<double> numeric_date(const json::value& v) {
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  if (v.is_double() && std::isfinite(v.get_double())) return v.get_double();
  return std::nullopt;
}

std::optional<json::object> parse_object(std::string_view segment) {
  std::string text;
  try {
    text = base64url_decode(segment);
  } catch (const Error&) {
    return std::nullopt;
  }
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return std::move(v.as_object());
}

}  // namespace

std::string sign_hs256(std::string_view secret, const json::object& claims) {
  require_secret(secret);
  auto exp = claims.find("exp");
  if (exp == claims.end() || !numeric_date(exp->value())) {
    throw Error(Code::kInvalidArgument, "jwt: claims need a numeric exp");
  }
  std::string token(kHeader);
  token += '.';
  token += base64url_encode(json::serialize(claims));
  std::string mac = hmac_sha256(secret, token);
  token += '.';
  token += base64url_encode(mac);
  return token;
}

json::object verify_hs256(std::string_view secret, std::string_view token,
                          std::chrono::system_clock::time_point now,
                          const JwtVerifyOptions& options) {
  require_secret(secret);
  if (token.size() > options.max_token_size) throw reject("malformed token");
  std::size_t dot1 = token.find('.');
  if (dot1 == std::string_view::npos) throw reject("malformed token");
  std::size_t dot2 = token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    throw reject("malformed token");
  }
  std::string_view header_b64 = token.substr(0, dot1);
  std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view signature_b64 = token.substr(dot2 + 1);

  auto header = parse_object(header_b64);
  if (!header) throw reject("malformed token");
  const json::value* alg = header->if_contains("alg");
  if (alg == nullptr || !alg->is_string() || alg->get_string() != "HS256") {
    throw reject("unsupported alg");
  }
  // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
  if (header->contains("crit")) throw reject("unsupported header");

  std::string signature;
  try {
    signature = base64url_decode(signature_b64);
  } catch (const Error&) {
    throw reject("malformed token");
  }
  std::string expected = hmac_sha256(secret, token.substr(0, dot2));
  if (!constant_time_equal(signature, expected)) throw reject("bad signature");

  auto claims = parse_object(payload_b64);
  if (!claims) throw reject("invalid claims");

  const double now_s = std::chrono::duration<double>(now.time_since_epoch()).count();
  const double leeway = static_cast<double>(options.leeway.count());
  const json::value* exp = claims->if_contains("exp");
  if (exp == nullptr) throw reject("missing exp");
  auto exp_s = numeric_date(*exp);
  if (!exp_s) throw reject("invalid claims");
  if (now_s >= *exp_s + leeway) throw reject("expired");
  if (const json::value* nbf = claims->if_contains("nbf")) {
    auto nbf_s = numeric_date(*nbf);
    if (!nbf_s) throw reject("invalid claims");
    if (*nbf_s > now_s + leeway) throw reject("not yet valid");
  }
  return std::move(*claims);
}

}  // namespace wrenn::crypto
