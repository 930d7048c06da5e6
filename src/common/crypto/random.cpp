#include "crypto/random.h"

#include <openssl/rand.h>

#include <algorithm>
#include <climits>

#include "crypto/encoding.h"
#include "crypto/ossl.h"

namespace wrenn::crypto {

void random_fill(std::span<unsigned char> out) {
  // RAND_bytes takes an int length; larger requests are served in chunks.
  while (!out.empty()) {
    std::size_t chunk = std::min<std::size_t>(out.size(), INT_MAX);
    detail::check(RAND_bytes(out.data(), static_cast<int>(chunk)) == 1, "RAND_bytes");
    out = out.subspan(chunk);
  }
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  random_fill({reinterpret_cast<unsigned char*>(out.data()), out.size()});
  return out;
}

std::string random_hex(std::size_t nbytes) {
  return hex_encode(random_bytes(nbytes));
}

}  // namespace wrenn::crypto
