// wrenn_crypto: known-answer tests (expected values computed with the openssl command line
// or Python, never with this library), id formats, JWT rejection, AEAD tampering, and the
// mTLS CA down to a real TLS 1.3 handshake over a BIO pair.
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "crypto/aead.h"
#include "crypto/ca.h"
#include "crypto/encoding.h"
#include "crypto/hash.h"
#include "crypto/ids.h"
#include "crypto/jwt.h"
#include "crypto/random.h"
#include "error.h"

using namespace wrenn;
using namespace wrenn::crypto;
namespace json = boost::json;
using std::chrono::system_clock;

namespace {

// Runs f, requires it to throw wrenn::Error with `code`, and returns the message.
template <typename F>
std::string error_of(F&& f, Code code) {
  try {
    f();
  } catch (const Error& e) {
    CHECK(code_name(e.code()) == code_name(code));
    return e.what();
  }
  FAIL("expected wrenn::Error(" << code_name(code) << ")");
  return {};
}

system_clock::time_point at(long long unix_seconds) {
  return system_clock::time_point(std::chrono::seconds(unix_seconds));
}

// A token with arbitrary header and payload JSON, signed with HMAC-SHA256 under secret.
std::string forge(std::string_view header, std::string_view payload, std::string_view secret) {
  std::string t = base64url_encode(header) + "." + base64url_encode(payload);
  return t + "." + base64url_encode(hmac_sha256(secret, t));
}

// ---- OpenSSL helpers for inspecting certificates and running handshakes ----

template <auto Fn>
struct Free {
  template <typename T>
  void operator()(T* p) const {
    Fn(p);
  }
};
using X509P = std::unique_ptr<X509, Free<X509_free>>;
using PkeyP = std::unique_ptr<EVP_PKEY, Free<EVP_PKEY_free>>;
using BioP = std::unique_ptr<BIO, Free<BIO_free_all>>;
using CtxP = std::unique_ptr<SSL_CTX, Free<SSL_CTX_free>>;
using SslP = std::unique_ptr<SSL, Free<SSL_free>>;
using NamesP = std::unique_ptr<GENERAL_NAMES, Free<GENERAL_NAMES_free>>;

X509P load_cert(const std::string& pem) {
  BioP bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509P cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(cert);
  return cert;
}

PkeyP load_key(const std::string& pem) {
  BioP bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyP key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(key);
  return key;
}

std::string key_pem_of(EVP_PKEY* key) {
  BioP bio(BIO_new(BIO_s_mem()));
  REQUIRE(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

bool is_p256(EVP_PKEY* key) {
  char name[64];
  std::size_t len = 0;
  return EVP_PKEY_is_a(key, "EC") && EVP_PKEY_get_group_name(key, name, sizeof name, &len) == 1 &&
         std::string(name) == "prime256v1";
}

std::string subject_cn(X509* cert) {
  char buf[256];
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
  return n < 0 ? std::string() : std::string(buf, static_cast<std::size_t>(n));
}

struct Sans {
  std::vector<std::string> ips;  // raw address bytes
  std::vector<std::string> dns;
};

Sans sans_of(X509* cert) {
  Sans out;
  NamesP names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (!names) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    int type = 0;
    auto* v = static_cast<ASN1_STRING*>(GENERAL_NAME_get0_value(gn, &type));
    std::string s(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                  static_cast<std::size_t>(ASN1_STRING_length(v)));
    if (type == GEN_IPADD) out.ips.push_back(s);
    if (type == GEN_DNS) out.dns.push_back(s);
  }
  return out;
}

long long unix_of(const ASN1_TIME* t) {
  std::tm tm{};
  REQUIRE(ASN1_TIME_to_tm(t, &tm) == 1);
  return static_cast<long long>(timegm(&tm));
}

long long now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(system_clock::now().time_since_epoch())
      .count();
}

std::string drain() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += buf;
    out += "; ";
  }
  return out;
}

struct Identity {
  std::string cert_pem;
  std::string key_pem;
};

CtxP tls_ctx(bool server, const std::string& ca_pem, const Identity* id) {
  CtxP ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  REQUIRE(ctx);
  REQUIRE(SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) == 1);
  X509P ca = load_cert(ca_pem);
  REQUIRE(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), ca.get()) == 1);
  if (id != nullptr) {
    X509P cert = load_cert(id->cert_pem);
    PkeyP key = load_key(id->key_pem);
    REQUIRE(SSL_CTX_use_certificate(ctx.get(), cert.get()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(ctx.get(), key.get()) == 1);
    REQUIRE(SSL_CTX_check_private_key(ctx.get()) == 1);
  }
  SSL_CTX_set_verify(ctx.get(),
                     server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
                     nullptr);
  return ctx;
}

struct Handshake {
  bool server_ok = false;
  bool client_ok = false;   // handshake and an application-data round trip both succeeded
  long server_verify = -1;  // SSL_get_verify_result on the server
  long client_verify = -1;
  bool server_saw_client_cert = false;
  std::string server_error;
  std::string client_error;
};

// Runs a TLS 1.3 handshake between a server (mTLS required) and a client over an in-memory
// BIO pair, then exchanges one message each way.
Handshake handshake(const std::string& ca_pem, const Identity& server_id, const Identity* client_id,
                    const std::string& expect_server_ip = "127.0.0.1",
                    const std::string* client_trust = nullptr) {
  CtxP sctx = tls_ctx(true, ca_pem, &server_id);
  CtxP cctx = tls_ctx(false, client_trust ? *client_trust : ca_pem, client_id);
  SslP s(SSL_new(sctx.get()));
  SslP c(SSL_new(cctx.get()));
  REQUIRE((s && c));
  REQUIRE(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c.get()), expect_server_ip.c_str()) == 1);
  BIO* cio = nullptr;
  BIO* sio = nullptr;
  REQUIRE(BIO_new_bio_pair(&cio, 0, &sio, 0) == 1);
  SSL_set_bio(c.get(), cio, cio);
  SSL_set_bio(s.get(), sio, sio);
  SSL_set_connect_state(c.get());
  SSL_set_accept_state(s.get());

  Handshake r;
  enum State { kRunning, kDone, kFailed };
  State cs = kRunning, ss = kRunning;
  auto step = [](SSL* ssl, State& st, std::string& err) {
    if (st != kRunning) return;
    int ret = SSL_do_handshake(ssl);
    if (ret == 1) {
      st = kDone;
      return;
    }
    int e = SSL_get_error(ssl, ret);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
    st = kFailed;
    err = "handshake: " + drain();
  };
  for (int i = 0; i < 64 && (cs == kRunning || ss == kRunning); ++i) {
    step(c.get(), cs, r.client_error);
    step(s.get(), ss, r.server_error);
  }
  r.server_verify = SSL_get_verify_result(s.get());
  r.client_verify = SSL_get_verify_result(c.get());
  r.server_saw_client_cert = SSL_get0_peer_certificate(s.get()) != nullptr;
  r.server_ok = ss == kDone;

  if (cs == kDone) {
    // TLS 1.3: the client finishes before the server has judged its certificate, so a
    // rejection only shows when the client next reads.
    const char ping[] = "ping";
    bool ok = SSL_write(c.get(), ping, 4) == 4;
    char buf[16];
    if (ok && ss == kDone) {
      ok = SSL_read(s.get(), buf, sizeof buf) == 4 && std::memcmp(buf, ping, 4) == 0 &&
           SSL_write(s.get(), "pong", 4) == 4;
    }
    if (ok) {
      int n = SSL_read(c.get(), buf, sizeof buf);
      ok = n == 4 && std::memcmp(buf, "pong", 4) == 0;
      if (!ok) r.client_error = "read: " + drain();
    }
    r.client_ok = ok;
  }
  drain();
  return r;
}

// Shared across CA tests: P-256 key generation is cheap, but not free.
const CertificateAuthority& test_ca() {
  static CertificateAuthority ca = CertificateAuthority::create("wrenn test CA");
  return ca;
}

}  // namespace

// ------------------------------------------------------------------------------------------
// random, encodings, hashes

TEST_CASE("crypto random: sizes, hex alphabet, no repeats") {
  CHECK(random_bytes(0).empty());
  CHECK(random_bytes(1).size() == 1);
  CHECK(random_bytes(4096).size() == 4096);
  std::string hex = random_hex(32);
  REQUIRE(hex.size() == 64);
  CHECK(hex.find_first_not_of("0123456789abcdef") == std::string::npos);
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(random_bytes(16));
  CHECK(seen.size() == 1000);
}

TEST_CASE("crypto encodings: RFC 4648 vectors and strict decoding") {
  // `printf %s X | openssl base64 -A`
  const std::pair<const char*, const char*> kStd[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (auto [plain, enc] : kStd) {
    CHECK(base64_encode(plain) == enc);
    CHECK(base64_decode(enc) == plain);
    std::string url = enc;
    url.erase(url.find_last_not_of('=') + 1);
    CHECK(base64url_encode(plain) == url);
    CHECK(base64url_decode(url) == plain);
  }
  // 0xfb 0xff: '+' and '/' in std, '-' and '_' in url.
  CHECK(base64_encode("\xfb\xff") == "+/8=");
  CHECK(base64url_encode("\xfb\xff") == "-_8");
  CHECK(base64url_decode("-_8") == "\xfb\xff");
  CHECK(hex_encode(std::string("\x00\xab\xff", 3)) == "00abff");
  CHECK(hex_decode("00ABff") == std::string("\x00\xab\xff", 3));

  for (const char* bad : {"Zg", "Zg=", "Zg===", "Z===", "Zm9v\n", " Zm9v", "Zm9v=Zm9",
                          "Zh==", "Zm9=", "-_8=", "Zm$v", "Zg==Zg=="}) {
    INFO(bad);
    error_of([&] { base64_decode(bad); }, Code::kInvalidArgument);
  }
  for (const char* bad : {"Zg==", "+/8", "Z", "Zh", "Zm9vY", "ab c", "Zm9v\n"}) {
    INFO(bad);
    error_of([&] { base64url_decode(bad); }, Code::kInvalidArgument);
  }
  for (const char* bad : {"0", "0g", "zz", "0x00", " 00"}) {
    INFO(bad);
    error_of([&] { hex_decode(bad); }, Code::kInvalidArgument);
  }
}

TEST_CASE("crypto hashes: known answers") {
  // printf abc | openssl dgst -sha256
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256("abc").size() == 32);
  // RFC 4231 test case 2; printf 'what do ya want for nothing?' | openssl dgst -sha256 -hmac Jefe
  CHECK(hmac_sha256_hex("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(hex_encode(hmac_sha256("Jefe", "what do ya want for nothing?")) ==
        hmac_sha256_hex("Jefe", "what do ya want for nothing?"));
  // RFC 4231 test case 1: 20 bytes of 0x0b, "Hi There".
  CHECK(hmac_sha256_hex(std::string(20, '\x0b'), "Hi There") ==
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  CHECK(hmac_sha256("", "x").size() == 32);

  CHECK(constant_time_equal("", ""));
  CHECK(constant_time_equal("abc", "abc"));
  CHECK_FALSE(constant_time_equal("abc", "abd"));
  CHECK_FALSE(constant_time_equal("abc", "ab"));
  CHECK_FALSE(constant_time_equal("", "a"));
}

// ------------------------------------------------------------------------------------------
// ids

TEST_CASE("crypto ids: base36 encoding of UUIDs, known answers") {
  using namespace wrenn::ids;
  // Expected strings from Python: int(hex, 16) in base 36, left-padded to 25.
  CHECK(format_id(Kind::kTeam, Uuid{}) == "team-0000000000000000000000000");
  Uuid ones;
  ones.fill(0xff);
  CHECK(format_id(Kind::kCapsule, ones) == "cl-f5lxx1zz5pnorynqglhzmsp33");
  Uuid u = parse_uuid("123e4567-e89b-12d3-a456-426614174000");
  CHECK(format_id(Kind::kUser, u) == "usr-12vqjrnxk8whv3i8qi6qgrlz4");
  CHECK(parse_id(Kind::kUser, "usr-12vqjrnxk8whv3i8qi6qgrlz4") == u);
  CHECK(parse_id(Kind::kCapsule, "cl-f5lxx1zz5pnorynqglhzmsp33") == ones);
  CHECK(uuid_string(u) == "123e4567-e89b-12d3-a456-426614174000");
  CHECK(parse_uuid("123E4567-E89B-12D3-A456-426614174000") == u);
  Uuid one{};
  one[15] = 1;
  CHECK(format_id(Kind::kHost, one) == "host-0000000000000000000000001");

  const std::pair<Kind, const char*> kPrefixes[] = {
      {Kind::kCapsule, "cl-"},   {Kind::kUser, "usr-"},       {Kind::kTeam, "team-"},
      {Kind::kApiKey, "key-"},   {Kind::kBuild, "bld-"},      {Kind::kPermission, "perm-"},
      {Kind::kHost, "host-"},    {Kind::kHostToken, "htok-"}, {Kind::kHostRefreshToken, "hrt-"},
      {Kind::kAuditLog, "log-"}, {Kind::kChannel, "ch-"},     {Kind::kTemplate, "tmpl-"}, {Kind::kEvent, "ev-"}, {Kind::kDelivery, "dl-"},
  };
  for (auto [kind, p] : kPrefixes) {
    CHECK(prefix(kind) == p);
    std::string id = new_id(kind);
    CHECK(id.size() == std::strlen(p) + 25);
    CHECK(id.starts_with(p));
    CHECK(id.substr(std::strlen(p)).find_first_not_of("0123456789abcdefghijklmnopqrstuvwxyz") ==
          std::string::npos);
  }
}

TEST_CASE("crypto ids: fresh ids are v4 UUIDs, unique, and round-trip") {
  using namespace wrenn::ids;
  std::set<std::string> seen;
  for (int i = 0; i < 2000; ++i) {
    std::string id = new_id(Kind::kCapsule);
    Uuid u = parse_id(Kind::kCapsule, id);
    CHECK((u[6] & 0xf0) == 0x40);
    CHECK((u[8] & 0xc0) == 0x80);
    CHECK(format_id(Kind::kCapsule, u) == id);
    CHECK(parse_uuid(uuid_string(u)) == u);
    seen.insert(id);
  }
  CHECK(seen.size() == 2000);
}

TEST_CASE("crypto ids: parse rejects with a typed error naming the id") {
  using namespace wrenn::ids;
  std::string good = new_id(Kind::kCapsule);
  std::string body = good.substr(3);
  std::string upper = good;
  upper.back() = 'A';
  const std::string bad[] = {
      "",
      "cl-",
      "team-" + body,                    // wrong prefix
      "CL-" + body,                      // prefix case
      "cl-" + body.substr(1),            // 24 chars
      "cl-" + body + "0",                // 26 chars
      "cl-" + body.substr(0, 24) + "A",  // uppercase
      "cl-" + body.substr(0, 24) + "-",  // outside the alphabet
      "cl-" + body.substr(0, 24) + std::string(1, '\0'),
      "cl-f5lxx1zz5pnorynqglhzmsp34",  // 2^128: one past the largest UUID
      "cl-zzzzzzzzzzzzzzzzzzzzzzzzz",  // far beyond
      " " + good,
      good + " ",
  };
  for (const std::string& text : bad) {
    INFO(text);
    CHECK_FALSE(try_parse_id(Kind::kCapsule, text));
    std::string msg = error_of([&] { parse_id(Kind::kCapsule, text); }, Code::kInvalidArgument);
    CHECK(msg.starts_with("invalid capsule ID \""));
  }
  std::string msg = error_of([] { parse_id(Kind::kHost, "host-nope"); }, Code::kInvalidArgument);
  CHECK(msg == "invalid host ID \"host-nope\"");
  // Untrusted text is escaped and bounded in the message.
  msg = error_of([] { parse_id(Kind::kTeam, std::string(1000, 'x') + "\n"); },
                 Code::kInvalidArgument);
  CHECK(msg.size() < 120);
  msg = error_of([] { parse_id(Kind::kTeam, "a\"b\n"); }, Code::kInvalidArgument);
  CHECK(msg == "invalid team ID \"a\\x22b\\x0a\"");

  for (const char* u :
       {"", "123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400g",
        "123e4567-e89b-12d3-a456_426614174000", "123e4567-e89b-12d3-a456-4266141740000"}) {
    INFO(u);
    error_of([&] { parse_uuid(u); }, Code::kInvalidArgument);
  }
}

TEST_CASE("crypto ids: API keys") {
  using namespace wrenn::ids;
  std::string key = new_api_key();
  REQUIRE(key.size() == 36);
  CHECK(key.starts_with("wrn_"));
  CHECK(key.substr(4).find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(looks_like_api_key(key));
  CHECK(api_key_prefix(key) == key.substr(0, 10));
  CHECK(new_api_key() != key);
  for (const std::string& bad : {std::string(""), std::string("wrn_"), key.substr(0, 35), key + "0",
                                 "wrk_" + key.substr(4), "wrn_" + key.substr(4, 31) + "A",
                                 "wrn_" + key.substr(4, 31) + "g", "WRN_" + key.substr(4)}) {
    INFO(bad);
    CHECK_FALSE(looks_like_api_key(bad));
    error_of([&] { api_key_prefix(bad); }, Code::kInvalidArgument);
  }
}

// ------------------------------------------------------------------------------------------
// JWT

namespace {
constexpr std::string_view kJwtSecret = "your-256-bit-secret";
// The jwt.io HS256 example (no exp); signature also reproduced with
// `printf '%s.%s' H P | openssl dgst -sha256 -hmac your-256-bit-secret -binary | base64url`.
constexpr std::string_view kJwtIoToken =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
// Header {"alg":"HS256","typ":"JWT"}, payload
// {"sub":"usr-0000000000000000000000001","team_id":"team-0000000000000000000000000",
//  "iat":1700000000,"exp":1700021600}, signed the same way with openssl.
constexpr std::string_view kUserToken =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJ1c3ItMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMSIsInRlYW1faWQiOiJ0ZWFtLTAwMDAwMDAwMDAwMDAw"
    "MDAwMDAwMDAwMDAiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAyMTYwMH0."
    "fp_ErWIoTDpm-mJB0RScnIfU95MnNjxVHMK2NvVo3Js";
// The same payload under {"alg":"HS512","typ":"JWT"} with a valid HMAC-SHA512 signature.
constexpr std::string_view kHs512Token =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJ1c3ItMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMSIsInRlYW1faWQiOiJ0ZWFtLTAwMDAwMDAwMDAwMDAw"
    "MDAwMDAwMDAwMDAiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAyMTYwMH0."
    "a4Oz9NJKWrMdT8BIJWwX6jT1FVx35xnKhb3CGCQj91S7OvmdLmCRWs8hY1voOp-T4L_xAT6GNdGcxymwmYAbkQ";
// The same payload under {"alg":"none","typ":"JWT"} with an empty signature.
constexpr std::string_view kNoneToken =
    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
    "eyJzdWIiOiJ1c3ItMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMSIsInRlYW1faWQiOiJ0ZWFtLTAwMDAwMDAwMDAwMDAw"
    "MDAwMDAwMDAwMDAiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAyMTYwMH0.";

std::string jwt_error(std::string_view token, system_clock::time_point now,
                      std::string_view secret = kJwtSecret, JwtVerifyOptions opts = {}) {
  return error_of([&] { verify_hs256(secret, token, now, opts); }, Code::kUnauthenticated);
}
}  // namespace

TEST_CASE("crypto jwt: known answers against openssl-computed signatures") {
  json::object claims;
  claims["sub"] = "usr-0000000000000000000000001";
  claims["team_id"] = "team-0000000000000000000000000";
  claims["iat"] = 1700000000;
  claims["exp"] = 1700021600;
  CHECK(sign_hs256(kJwtSecret, claims) == kUserToken);

  json::object got = verify_hs256(kJwtSecret, kUserToken, at(1700000100));
  CHECK(got == claims);
  CHECK(got.at("sub").as_string() == "usr-0000000000000000000000001");

  // The jwt.io example has a valid signature but no exp: rejected for exactly that reason.
  CHECK(jwt_error(kJwtIoToken, at(1516239022)) == "jwt: missing exp");
  std::string broken(kJwtIoToken);
  std::size_t sig = broken.rfind('.') + 1;
  broken[sig] = broken[sig] == 'S' ? 'T' : 'S';
  CHECK(jwt_error(broken, at(1516239022)) == "jwt: bad signature");
}

TEST_CASE("crypto jwt: round trip and time claims") {
  json::object claims{
      {"sub", "host-0000000000000000000000001"}, {"typ", "host"}, {"iat", 1000}, {"exp", 2000}};
  std::string token = sign_hs256(kJwtSecret, claims);
  CHECK(verify_hs256(kJwtSecret, token, at(1500)) == claims);

  // exp with the default 30 s leeway: valid strictly before exp + 30.
  CHECK_NOTHROW(verify_hs256(kJwtSecret, token, at(2029)));
  CHECK(jwt_error(token, at(2030)) == "jwt: expired");
  CHECK(jwt_error(token, at(1'000'000)) == "jwt: expired");
  JwtVerifyOptions strict;
  strict.leeway = std::chrono::seconds(0);
  CHECK_NOTHROW(verify_hs256(kJwtSecret, token, at(1999), strict));
  CHECK(jwt_error(token, at(2000), kJwtSecret, strict) == "jwt: expired");

  json::object later{{"nbf", 1800}, {"exp", 3000}};
  std::string t2 = sign_hs256(kJwtSecret, later);
  CHECK(jwt_error(t2, at(1700)) == "jwt: not yet valid");
  CHECK_NOTHROW(verify_hs256(kJwtSecret, t2, at(1771)));  // within leeway
  CHECK_NOTHROW(verify_hs256(kJwtSecret, t2, at(1800)));
  CHECK(jwt_error(t2, at(1771), kJwtSecret, strict) == "jwt: not yet valid");

  // Fractional NumericDate is allowed.
  std::string t3 = forge(R"({"alg":"HS256"})", R"({"exp":2000.5})", kJwtSecret);
  CHECK_NOTHROW(verify_hs256(kJwtSecret, t3, at(2000), strict));
  CHECK(jwt_error(t3, at(2001), kJwtSecret, strict) == "jwt: expired");
}

TEST_CASE("crypto jwt: rejects bad tokens without echoing them") {
  auto now = at(1700000100);
  CHECK(jwt_error(kNoneToken, now) == "jwt: unsupported alg");
  CHECK(jwt_error(kHs512Token, now) == "jwt: unsupported alg");
  // "none" even with a signature that is a valid HS256 MAC over the token.
  std::string payload = R"({"exp":1700021600})";
  CHECK(jwt_error(forge(R"({"alg":"none"})", payload, kJwtSecret), now) == "jwt: unsupported alg");
  for (const char* header : {R"({"alg":"HS384"})", R"({"alg":"RS256"})", R"({"alg":"hs256"})",
                             R"({"typ":"JWT"})", R"({"alg":null})", R"({"alg":["HS256"]})"}) {
    INFO(header);
    CHECK(jwt_error(forge(header, payload, kJwtSecret), now) == "jwt: unsupported alg");
  }
  CHECK(jwt_error(forge(R"({"alg":"HS256","crit":["b64"]})", payload, kJwtSecret), now) ==
        "jwt: unsupported header");
  CHECK(jwt_error(kUserToken, now, "not-the-secret") == "jwt: bad signature");

  // Tampered payload: same header and signature, one claim changed.
  json::object admin{{"sub", "usr-0000000000000000000000001"},
                     {"team_id", "team-0000000000000000000000000"},
                     {"iat", 1700000000},
                     {"exp", 1700021600},
                     {"is_admin", true}};
  std::string t(kUserToken);
  std::size_t d1 = t.find('.'), d2 = t.rfind('.');
  std::string tampered =
      t.substr(0, d1 + 1) + base64url_encode(json::serialize(admin)) + t.substr(d2);
  CHECK(jwt_error(tampered, now) == "jwt: bad signature");
  // Tampered header (alg unchanged, extra member) invalidates the signature too.
  std::string hdr = base64url_encode(R"({"alg":"HS256","typ":"JWT","kid":"x"})");
  CHECK(jwt_error(hdr + t.substr(d1), now) == "jwt: bad signature");
  // Truncated or extended signatures.
  CHECK(jwt_error(t.substr(0, t.size() - 1), now) != "");
  CHECK(jwt_error(t + "A", now) != "");
  CHECK(jwt_error(t.substr(0, d2 + 1), now) == "jwt: bad signature");

  // Structure.
  for (const std::string& bad :
       {std::string(), std::string("."), std::string(".."), std::string("a.b"), t + ".",
        t.substr(0, d2) + "." + t.substr(d2 + 1) + ".x", "x" + t,
        t.substr(0, d1) + "=" + t.substr(d1), t.substr(0, d2) + "==" + t.substr(d2),
        std::string(10000, 'a') + "." + t}) {
    INFO(bad.substr(0, 80));
    std::string msg = jwt_error(bad, now);
    CHECK((msg == "jwt: malformed token" || msg == "jwt: bad signature"));
  }
  CHECK(jwt_error(base64url_encode("not json") + t.substr(d1), now) == "jwt: malformed token");
  CHECK(jwt_error(base64url_encode("[1]") + t.substr(d1), now) == "jwt: malformed token");

  // Correctly signed but unacceptable payloads.
  const std::string h = R"({"alg":"HS256","typ":"JWT"})";
  CHECK(jwt_error(forge(h, "[1,2]", kJwtSecret), now) == "jwt: invalid claims");
  CHECK(jwt_error(forge(h, "\"str\"", kJwtSecret), now) == "jwt: invalid claims");
  CHECK(jwt_error(forge(h, "{bad json", kJwtSecret), now) == "jwt: invalid claims");
  CHECK(jwt_error(forge(h, R"({"sub":"x"})", kJwtSecret), now) == "jwt: missing exp");
  CHECK(jwt_error(forge(h, R"({"exp":"1700021600"})", kJwtSecret), now) == "jwt: invalid claims");
  CHECK(jwt_error(forge(h, R"({"exp":null})", kJwtSecret), now) == "jwt: invalid claims");
  CHECK(jwt_error(forge(h, R"({"exp":1700021600,"nbf":"0"})", kJwtSecret), now) ==
        "jwt: invalid claims");

  // Messages never carry the token, the claims or the secret.
  std::string msg = jwt_error(kUserToken, now, "not-the-secret");
  CHECK(msg.find("not-the-secret") == std::string::npos);
  CHECK(msg.find("eyJ") == std::string::npos);
}

TEST_CASE("crypto jwt: configuration errors") {
  json::object ok{{"exp", 10}};
  error_of([&] { sign_hs256("", ok); }, Code::kInvalidArgument);
  error_of([&] { verify_hs256("", kUserToken, at(0)); }, Code::kInvalidArgument);
  error_of([&] { sign_hs256(kJwtSecret, json::object{{"sub", "x"}}); }, Code::kInvalidArgument);
  error_of([&] { sign_hs256(kJwtSecret, json::object{{"exp", "10"}}); }, Code::kInvalidArgument);
}

// ------------------------------------------------------------------------------------------
// AEAD

TEST_CASE("crypto aead: round trip, format and nonce freshness") {
  AeadKey key = new_aead_key();
  for (std::string pt :
       {std::string(), std::string("x"), std::string(1000, 'q'), std::string("\0\1\2", 3)}) {
    for (std::string aad : {std::string(), std::string("channel:ch-1:url")}) {
      std::string sealed = seal(key, pt, aad);
      CHECK(sealed.size() == pt.size() + kAeadOverhead);
      CHECK(sealed[0] == '\x01');
      CHECK(open(key, sealed, aad) == pt);
    }
  }
  std::string a = seal(key, "secret");
  std::string b = seal(key, "secret");
  CHECK(a != b);
  CHECK(a.substr(1, 12) != b.substr(1, 12));
  CHECK(a.find("secret") == std::string::npos);
  CHECK(open(key, base64_decode(base64_encode(a))) == "secret");
}

TEST_CASE("crypto aead: every kind of tampering is data_loss") {
  AeadKey key = new_aead_key();
  const std::string aad = "aad";
  const std::string sealed = seal(key, "webhook-secret-value", aad);

  // Every single-bit flip in every byte (version, nonce, ciphertext, tag).
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string t = sealed;
      t[i] = static_cast<char>(t[i] ^ (1 << bit));
      INFO("byte " << i << " bit " << bit);
      error_of([&] { open(key, t, aad); }, Code::kDataLoss);
    }
  }
  // Every truncation, and extension.
  for (std::size_t n = 0; n < sealed.size(); ++n) {
    INFO("length " << n);
    error_of([&] { open(key, sealed.substr(0, n), aad); }, Code::kDataLoss);
  }
  error_of([&] { open(key, sealed + '\0', aad); }, Code::kDataLoss);
  // Wrong key (one bit off, and unrelated), wrong or missing aad.
  AeadKey k2 = key;
  k2[31] ^= 1;
  error_of([&] { open(k2, sealed, aad); }, Code::kDataLoss);
  error_of([&] { open(new_aead_key(), sealed, aad); }, Code::kDataLoss);
  error_of([&] { open(key, sealed, "aae"); }, Code::kDataLoss);
  error_of([&] { open(key, sealed); }, Code::kDataLoss);
  error_of([&] { open(key, seal(key, "x"), "aad"); }, Code::kDataLoss);
  // Swapping ciphertexts between messages of the same length.
  std::string other = seal(key, "webhook-secret-valuX", aad);
  std::string spliced = sealed.substr(0, 13) + other.substr(13);
  error_of([&] { open(key, spliced, aad); }, Code::kDataLoss);
  CHECK(open(key, sealed, aad) == "webhook-secret-value");
}

TEST_CASE("crypto aead: key parsing from configuration") {
  // 32 bytes 0x00..0x1f, as hex and as base64 (python3 base64.b64encode(bytes(range(32)))).
  std::string hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
  std::string b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
  AeadKey expected;
  for (unsigned i = 0; i < 32; ++i) expected[i] = static_cast<unsigned char>(i);
  CHECK(parse_aead_key(hex) == expected);
  std::string upper = hex;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  CHECK(parse_aead_key(upper) == expected);
  CHECK(parse_aead_key(b64) == expected);
  CHECK(parse_aead_key("  " + hex + "\n") == expected);

  const std::string bad[] = {
      "",
      hex.substr(1),                                       // 63 hex
      hex + "0",                                           // 65 hex
      hex.substr(0, 62),                                   // 31 bytes
      hex + hex,                                           // 64 bytes
      hex.substr(0, 63) + "g",                             // not hex
      "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==",      // base64 of 31 bytes
      "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gIQ==",  // base64 of 34 bytes
      "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",       // unpadded
      "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=",      // non-canonical
      "AAEC AwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
      "correct horse battery staple correct horse battery staple 12345",
  };
  for (const std::string& text : bad) {
    INFO(text);
    std::string msg = error_of([&] { parse_aead_key(text); }, Code::kInvalidArgument);
    CHECK(msg.find("64 hex characters or base64 of 32 bytes") != std::string::npos);
    if (!text.empty()) CHECK(msg.find(text) == std::string::npos);
  }
}

// ------------------------------------------------------------------------------------------
// CA

TEST_CASE("crypto ca: a new CA is a P-256 CA certificate for 10 years") {
  const CertificateAuthority& ca = test_ca();
  X509P cert = load_cert(ca.cert_pem());
  CHECK(subject_cn(cert.get()) == "wrenn test CA");
  CHECK(X509_NAME_cmp(X509_get_subject_name(cert.get()), X509_get_issuer_name(cert.get())) == 0);
  CHECK(X509_check_ca(cert.get()) == 1);
  CHECK((X509_get_extension_flags(cert.get()) & EXFLAG_CRITICAL) == 0);  // all understood
  int crit = -1;
  auto* bc = static_cast<BASIC_CONSTRAINTS*>(
      X509_get_ext_d2i(cert.get(), NID_basic_constraints, &crit, nullptr));
  REQUIRE(bc != nullptr);
  CHECK(bc->ca != 0);
  CHECK(crit == 1);
  BASIC_CONSTRAINTS_free(bc);
  CHECK(X509_get_key_usage(cert.get()) == (KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  CHECK(X509_get_signature_nid(cert.get()) == NID_ecdsa_with_SHA256);
  CHECK(is_p256(X509_get0_pubkey(cert.get())));
  CHECK(X509_get0_subject_key_id(cert.get()) != nullptr);
  // 128-bit serial: at most 16 significant bytes, positive.
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert.get());
  CHECK(ASN1_STRING_length(serial) <= 16);
  CHECK(ASN1_STRING_type(serial) == V_ASN1_INTEGER);
  long long lifetime =
      unix_of(X509_get0_notAfter(cert.get())) - unix_of(X509_get0_notBefore(cert.get()));
  CHECK(lifetime >= 3650LL * 86400);
  CHECK(lifetime <= 3653LL * 86400 + 60);
  long long not_after = std::chrono::duration_cast<std::chrono::seconds>(
                            cert_not_after(ca.cert_pem()).time_since_epoch())
                            .count();
  CHECK(not_after == unix_of(X509_get0_notAfter(cert.get())));
  CHECK(ca.key_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
  CHECK_NOTHROW(verify_chain(ca.cert_pem(), ca.cert_pem()));
}

TEST_CASE("crypto ca: load round trip, encrypted key, and rejected inputs") {
  const CertificateAuthority& ca = test_ca();
  std::string fp = cert_fingerprint_sha256(ca.cert_pem());
  CHECK(fp.size() == 64);
  CHECK(fp.find_first_not_of("0123456789abcdef") == std::string::npos);
  // The fingerprint is the SHA-256 of the DER encoding.
  X509P cert = load_cert(ca.cert_pem());
  unsigned char* der = nullptr;
  int der_len = i2d_X509(cert.get(), &der);
  REQUIRE(der_len > 0);
  CHECK(fp == sha256_hex(std::string_view(reinterpret_cast<char*>(der), der_len)));
  OPENSSL_free(der);

  CertificateAuthority loaded = CertificateAuthority::load(ca.cert_pem(), ca.key_pem());
  CHECK(loaded.cert_pem() == ca.cert_pem());
  IssuedCert leaf = loaded.issue({"wrenn-cp", {}, {}, CertUsage::kClient, std::chrono::hours(24)});
  CHECK_NOTHROW(verify_chain(ca.cert_pem(), leaf.cert_pem));

  std::string enc = ca.key_pem_encrypted("correct horse");
  CHECK(enc.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
  CHECK(enc.find(ca.key_pem().substr(28, 40)) == std::string::npos);
  CertificateAuthority dec = CertificateAuthority::load(ca.cert_pem(), enc, "correct horse");
  CHECK(dec.key_pem() == ca.key_pem());
  std::string msg = error_of([&] { CertificateAuthority::load(ca.cert_pem(), enc, "wrong"); },
                             Code::kInvalidArgument);
  CHECK(msg.find("correct horse") == std::string::npos);
  // No passphrase for an encrypted key fails at once instead of prompting.
  error_of([&] { CertificateAuthority::load(ca.cert_pem(), enc); }, Code::kInvalidArgument);
  error_of([&] { (void)ca.key_pem_encrypted(""); }, Code::kInvalidArgument);

  CertificateAuthority other = CertificateAuthority::create("other CA");
  // Key of another CA.
  error_of([&] { CertificateAuthority::load(ca.cert_pem(), other.key_pem()); },
           Code::kInvalidArgument);
  // A leaf certificate is not a CA.
  error_of([&] { CertificateAuthority::load(leaf.cert_pem, leaf.key_pem); },
           Code::kInvalidArgument);
  // Garbage and empty PEM.
  error_of([&] { CertificateAuthority::load("not pem", ca.key_pem()); }, Code::kInvalidArgument);
  error_of([&] { CertificateAuthority::load(ca.cert_pem(), ""); }, Code::kInvalidArgument);
  error_of([&] { CertificateAuthority::load(ca.key_pem(), ca.key_pem()); }, Code::kInvalidArgument);
  // A key on another curve.
  PkeyP p384(EVP_EC_gen("P-384"));
  REQUIRE(p384);
  msg = error_of([&] { CertificateAuthority::load(ca.cert_pem(), key_pem_of(p384.get())); },
                 Code::kInvalidArgument);
  CHECK(msg.find("P-256") != std::string::npos);

  error_of([] { cert_fingerprint_sha256("junk"); }, Code::kInvalidArgument);
  error_of([] { cert_not_after(""); }, Code::kInvalidArgument);
  CHECK(ERR_peek_error() == 0);  // nothing left on the thread's error queue
}

namespace {
// An operator CA made with the openssl command line (SEC1 "EC PRIVATE KEY", as Go's
// x509.MarshalECPrivateKey also writes), valid for 100 years:
//   openssl ecparam -name prime256v1 -genkey -noout -out op.key
//   openssl req -x509 -new -key op.key -sha256 -days 36500 -subj "/CN=operator CA"
//     -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
//   openssl pkcs8 -topk8 -in op.key -v2 aes-256-cbc -passout pass:operator-pass
constexpr std::string_view kOperatorKey = R"(-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIEQh1wMqboVJpwTFM2RLp5PfXAX1S1ja1cju/Bq4NaS+oAoGCCqGSM49
AwEHoUQDQgAElb7AP7qcQbBnhNr5m6H/4ZbC8KxJhE64uZPoCFOv+cHdlBHXwaDF
WiCr9V6f0FI83sC0eOM0JjnT85LxfXniEA==
-----END EC PRIVATE KEY-----
)";
constexpr std::string_view kOperatorCert = R"(-----BEGIN CERTIFICATE-----
MIIBkjCCATmgAwIBAgIUNM0+FrY4tTbGHbj2cxxGoteBvaIwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLb3BlcmF0b3IgQ0EwIBcNMjYxMTIzMDMzOTQ4WhgPMjEyNjEw
MzAwMzM5NDhaMBYxFDASBgNVBAMMC29wZXJhdG9yIENBMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAElb7AP7qcQbBnhNr5m6H/4ZbC8KxJhE64uZPoCFOv+cHdlBHX
waDFWiCr9V6f0FI83sC0eOM0JjnT85LxfXniEKNjMGEwHQYDVR0OBBYEFAlfK1Sk
RIxtQmiPwfZrwT9LUP5uMB8GA1UdIwQYMBaAFAlfK1SkRIxtQmiPwfZrwT9LUP5u
MA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMAoGCCqGSM49BAMCA0cA
MEQCIE9QGZH6pr/3jWNpLUURamvuOKZ5BICrprZZGY9u5G3lAiBNQz8XSkqs6IRb
5794lYA0gf1EfBbRUYfTCAUlzl8gGw==
-----END CERTIFICATE-----
)";
constexpr std::string_view kOperatorKeyEncrypted = R"(-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAhUmYI04rUsEQICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEENTOtZ75aetddf4TH1lWHmIEgZA0
pDnurk9gCzAIyDt+MwgM74xYbqZnOy/11wFMOd4B/D703iXQ9MGcz98f7yiroz3n
WZZfLBYmcFCqREEgsVbQ/EAmZRUmQBknvoWfsHY002XYiLtiItJMNikcyhF1gDBj
JSPimpeDFB7FTMHo7zR8k51g7iuHEwK7S2Qch2IfGsRDwqW0asAWUkWw9M6r6ro=
-----END ENCRYPTED PRIVATE KEY-----
)";
}  // namespace

TEST_CASE("crypto ca: loads an operator CA made with the openssl command line") {
  CertificateAuthority plain = CertificateAuthority::load(kOperatorCert, kOperatorKey);
  CertificateAuthority enc =
      CertificateAuthority::load(kOperatorCert, kOperatorKeyEncrypted, "operator-pass");
  CHECK(plain.key_pem() == enc.key_pem());
  CHECK(plain.key_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
  error_of([] { CertificateAuthority::load(kOperatorCert, kOperatorKeyEncrypted, "nope"); },
           Code::kInvalidArgument);
  IssuedCert leaf = enc.issue({"host-0000000000000000000000001",
                               {"192.0.2.10"},
                               {},
                               CertUsage::kServer,
                               std::chrono::hours(24 * 7)});
  CHECK_NOTHROW(verify_chain(std::string(kOperatorCert), leaf.cert_pem));
  X509P cert = load_cert(leaf.cert_pem);
  X509P ca_cert = load_cert(std::string(kOperatorCert));
  // The leaf's AKI is the operator CA's SKI.
  const ASN1_OCTET_STRING* aki = X509_get0_authority_key_id(cert.get());
  REQUIRE(aki != nullptr);
  CHECK(ASN1_OCTET_STRING_cmp(aki, X509_get0_subject_key_id(ca_cert.get())) == 0);
}

TEST_CASE("crypto ca: issued server and client certificates carry the right extensions") {
  const CertificateAuthority& ca = test_ca();
  const long long before = now_unix();
  IssuedCert server = ca.issue({"host-0000000000000000000000001",
                                {"127.0.0.1", "fd00::1"},
                                {"agent.example.internal"},
                                CertUsage::kServer,
                                std::chrono::hours(24 * 7)});
  IssuedCert client = ca.issue({"wrenn-cp", {}, {}, CertUsage::kClient, std::chrono::hours(24)});
  const long long after = now_unix();

  X509P s = load_cert(server.cert_pem);
  X509P c = load_cert(client.cert_pem);
  X509P cacert = load_cert(ca.cert_pem());
  CHECK(subject_cn(s.get()) == "host-0000000000000000000000001");
  CHECK(subject_cn(c.get()) == "wrenn-cp");
  CHECK(X509_NAME_cmp(X509_get_issuer_name(s.get()), X509_get_subject_name(cacert.get())) == 0);
  CHECK(X509_check_issued(cacert.get(), s.get()) == X509_V_OK);

  Sans sans = sans_of(s.get());
  REQUIRE(sans.ips.size() == 2);
  CHECK(sans.ips[0] == std::string("\x7f\x00\x00\x01", 4));
  CHECK(sans.ips[1] ==
        std::string("\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01", 16));
  CHECK(sans.dns == std::vector<std::string>{"agent.example.internal"});
  CHECK(X509_check_ip_asc(s.get(), "127.0.0.1", 0) == 1);
  CHECK(X509_check_ip_asc(s.get(), "fd00::1", 0) == 1);
  CHECK(X509_check_ip_asc(s.get(), "127.0.0.2", 0) == 0);
  CHECK(X509_check_host(s.get(), "agent.example.internal", 0, 0, nullptr) == 1);
  CHECK(sans_of(c.get()).ips.empty());
  CHECK(X509_get_ext_by_NID(c.get(), NID_subject_alt_name, -1) < 0);

  for (X509* x : {s.get(), c.get()}) {
    CHECK(X509_check_ca(x) == 0);
    CHECK(X509_get_key_usage(x) == KU_DIGITAL_SIGNATURE);
    CHECK(X509_get_signature_nid(x) == NID_ecdsa_with_SHA256);
    CHECK(is_p256(X509_get0_pubkey(x)));
    CHECK(X509_get0_authority_key_id(x) != nullptr);
    CHECK(ASN1_STRING_length(X509_get0_serialNumber(x)) <= 16);
    long long nb = unix_of(X509_get0_notBefore(x));
    CHECK(nb >= before - 61);
    CHECK(nb <= after - 59);
  }
  CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(s.get()), X509_get0_serialNumber(c.get())) != 0);
  CHECK(X509_get_extended_key_usage(s.get()) == XKU_SSL_SERVER);
  CHECK(X509_get_extended_key_usage(c.get()) == XKU_SSL_CLIENT);
  CHECK(X509_check_purpose(s.get(), X509_PURPOSE_SSL_SERVER, 0) == 1);
  CHECK(X509_check_purpose(s.get(), X509_PURPOSE_SSL_CLIENT, 0) == 0);
  CHECK(X509_check_purpose(c.get(), X509_PURPOSE_SSL_CLIENT, 0) == 1);
  CHECK(X509_check_purpose(c.get(), X509_PURPOSE_SSL_SERVER, 0) == 0);

  long long s_after = unix_of(X509_get0_notAfter(s.get()));
  CHECK(s_after >= before + 7 * 86400);
  CHECK(s_after <= after + 7 * 86400);
  CHECK(system_clock::to_time_t(cert_not_after(server.cert_pem)) == s_after);

  IssuedCert both = ca.issue({"x", {"10.0.0.1"}, {}, CertUsage::kBoth, std::chrono::hours(1)});
  X509P b = load_cert(both.cert_pem);
  CHECK(X509_get_extended_key_usage(b.get()) == (XKU_SSL_SERVER | XKU_SSL_CLIENT));

  // The private key is fresh, P-256, and belongs to the certificate.
  PkeyP skey = load_key(server.key_pem);
  CHECK(is_p256(skey.get()));
  CHECK(X509_check_private_key(s.get(), skey.get()) == 1);
  CHECK(server.key_pem != client.key_pem);
  CHECK(server.key_pem != ca.key_pem());

  CHECK_NOTHROW(verify_chain(ca.cert_pem(), server.cert_pem));
  CHECK_NOTHROW(verify_chain(ca.cert_pem(), client.cert_pem));
  CertificateAuthority other = CertificateAuthority::create("other CA");
  std::string msg =
      error_of([&] { verify_chain(other.cert_pem(), server.cert_pem); }, Code::kUnauthenticated);
  CHECK(msg.starts_with("certificate verify failed: "));
  CHECK(cert_fingerprint_sha256(server.cert_pem) != cert_fingerprint_sha256(client.cert_pem));
}

TEST_CASE("crypto ca: issue rejects bad requests") {
  const CertificateAuthority& ca = test_ca();
  auto req = [] {
    return IssueRequest{"host-x", {"127.0.0.1"}, {}, CertUsage::kServer, std::chrono::hours(1)};
  };
  IssueRequest r = req();
  r.common_name = "";
  error_of([&] { ca.issue(r); }, Code::kInvalidArgument);
  r.common_name = std::string(65, 'a');
  error_of([&] { ca.issue(r); }, Code::kInvalidArgument);
  r = req();
  r.ip_sans = {};
  error_of([&] { ca.issue(r); }, Code::kInvalidArgument);  // server cert without SAN
  for (const char* ip : {"", "256.0.0.1", "1.2.3", "localhost", "fd00::g", "127.0.0.1:8080"}) {
    INFO(ip);
    r = req();
    r.ip_sans = {ip};
    error_of([&] { ca.issue(r); }, Code::kInvalidArgument);
  }
  for (const char* dns : {"", "a..b", "-a.b", "a-.b", "a b", "a,DNS:evil", "a.b.", "*"}) {
    INFO(dns);
    r = req();
    r.dns_sans = {dns};
    error_of([&] { ca.issue(r); }, Code::kInvalidArgument);
  }
  r = req();
  r.dns_sans = {"*.hosts.example", "node-1.example"};
  CHECK_NOTHROW(ca.issue(r));
  r = req();
  r.validity = std::chrono::seconds(0);
  error_of([&] { ca.issue(r); }, Code::kInvalidArgument);
  error_of([] { CertificateAuthority::create(""); }, Code::kInvalidArgument);
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("crypto ca: TLS 1.3 mutual authentication with issued certificates") {
  const CertificateAuthority& ca = test_ca();
  const std::string ca_pem = ca.cert_pem();
  IssuedCert server = ca.issue({"host-0000000000000000000000001",
                                {"127.0.0.1"},
                                {},
                                CertUsage::kServer,
                                std::chrono::hours(1)});
  IssuedCert client = ca.issue({"wrenn-cp", {}, {}, CertUsage::kClient, std::chrono::hours(1)});
  Identity server_id{server.cert_pem, server.key_pem};
  Identity client_id{client.cert_pem, client.key_pem};

  SECTION("a client certificate from the CA is accepted") {
    Handshake h = handshake(ca_pem, server_id, &client_id);
    INFO(h.server_error << " | " << h.client_error);
    CHECK(h.server_ok);
    CHECK(h.client_ok);
    CHECK(h.server_verify == X509_V_OK);
    CHECK(h.client_verify == X509_V_OK);
    CHECK(h.server_saw_client_cert);
  }
  SECTION("no client certificate is refused") {
    Handshake h = handshake(ca_pem, server_id, nullptr);
    CHECK_FALSE(h.server_ok);
    CHECK_FALSE(h.client_ok);
    CHECK(h.server_error.find("peer did not return a certificate") != std::string::npos);
  }
  SECTION("a self-signed client certificate of another CA is refused") {
    CertificateAuthority other = CertificateAuthority::create("wrenn-cp");
    Identity self_signed{other.cert_pem(), other.key_pem()};
    Handshake h = handshake(ca_pem, server_id, &self_signed);
    CHECK_FALSE(h.server_ok);
    CHECK_FALSE(h.client_ok);
    CHECK(h.server_verify != X509_V_OK);
  }
  SECTION("a client certificate issued by another CA is refused") {
    CertificateAuthority other = CertificateAuthority::create("other CA");
    IssuedCert foreign =
        other.issue({"wrenn-cp", {}, {}, CertUsage::kClient, std::chrono::hours(1)});
    Identity id{foreign.cert_pem, foreign.key_pem};
    Handshake h = handshake(ca_pem, server_id, &id);
    CHECK_FALSE(h.server_ok);
    CHECK_FALSE(h.client_ok);
    CHECK(h.server_verify == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  }
  SECTION("a server-only certificate cannot act as a client (EKU enforced)") {
    Handshake h = handshake(ca_pem, server_id, &server_id);
    CHECK_FALSE(h.server_ok);
    CHECK(h.server_verify == X509_V_ERR_INVALID_PURPOSE);
  }
  SECTION("the client checks the server's IP SAN and its chain") {
    Handshake wrong_ip = handshake(ca_pem, server_id, &client_id, "127.0.0.2");
    CHECK_FALSE(wrong_ip.client_ok);
    CHECK(wrong_ip.client_verify == X509_V_ERR_IP_ADDRESS_MISMATCH);
    CertificateAuthority other = CertificateAuthority::create("other CA");
    std::string other_pem = other.cert_pem();
    Handshake untrusted = handshake(ca_pem, server_id, &client_id, "127.0.0.1", &other_pem);
    CHECK_FALSE(untrusted.client_ok);
    CHECK(untrusted.client_verify != X509_V_OK);
  }
}
