#include "crypto/encoding.h"

#include <array>
#include <cstdint>

#include "error.h"

namespace wrenn::crypto {

namespace {

constexpr char kHexDigits[] = "0123456789abcdef";
constexpr char kStdAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kUrlAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

using DecodeTable = std::array<int8_t, 256>;

constexpr DecodeTable make_table(const char* alphabet) {
  DecodeTable t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
  return t;
}

constexpr DecodeTable kStdTable = make_table(kStdAlphabet);
constexpr DecodeTable kUrlTable = make_table(kUrlAlphabet);

std::string b64_encode(std::string_view in, const char* alphabet, bool pad) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  auto byte = [&](std::size_t k) {
    return static_cast<uint32_t>(static_cast<unsigned char>(in[k]));
  };
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += alphabet[v >> 6 & 63];
    out += alphabet[v & 63];
  }
  std::size_t rest = in.size() - i;
  if (rest == 1) {
    uint32_t v = byte(i) << 16;
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    if (pad) out += "==";
  } else if (rest == 2) {
    uint32_t v = byte(i) << 16 | byte(i + 1) << 8;
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += alphabet[v >> 6 & 63];
    if (pad) out += '=';
  }
  return out;
}

// Decodes unpadded base64 data (padding already stripped by the caller).
std::string b64_decode(std::string_view in, const DecodeTable& table, std::string_view what) {
  auto invalid = [&] { return Error(Code::kInvalidArgument, "invalid " + std::string(what)); };
  if (in.size() % 4 == 1) throw invalid();
  std::string out;
  out.reserve(in.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = table[static_cast<unsigned char>(c)];
    if (v < 0) throw invalid();
    acc = acc << 6 | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>(acc >> bits & 0xff);
    }
  }
  // Leftover bits must be zero so each byte string has exactly one encoding.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) throw invalid();
  return out;
}

}  // namespace

std::string hex_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    auto b = static_cast<unsigned char>(c);
    out += kHexDigits[b >> 4];
    out += kHexDigits[b & 15];
  }
  return out;
}

std::string hex_decode(std::string_view text) {
  if (text.size() % 2 != 0) throw Error(Code::kInvalidArgument, "invalid hex: odd length");
  std::string out;
  out.reserve(text.size() / 2);
  for (std::size_t i = 0; i < text.size(); i += 2) {
    int hi = hex_value(text[i]);
    int lo = hex_value(text[i + 1]);
    if (hi < 0 || lo < 0) throw Error(Code::kInvalidArgument, "invalid hex: bad character");
    out += static_cast<char>(hi << 4 | lo);
  }
  return out;
}

std::string base64_encode(std::string_view bytes) {
  return b64_encode(bytes, kStdAlphabet, true);
}

std::string base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) throw Error(Code::kInvalidArgument, "invalid base64");
  std::size_t pad = 0;
  while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=') ++pad;
  // A third '=' (or one inside the data) fails the alphabet check in b64_decode.
  return b64_decode(text.substr(0, text.size() - pad), kStdTable, "base64");
}

std::string base64url_encode(std::string_view bytes) {
  return b64_encode(bytes, kUrlAlphabet, false);
}

std::string base64url_decode(std::string_view text) {
  return b64_decode(text, kUrlTable, "base64url");
}

}  // namespace wrenn::crypto
