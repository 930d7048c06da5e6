#include "crypto/ossl.h"

#include <climits>

namespace wrenn::crypto::detail {

std::string drain_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

Error openssl_error(Code code, std::string_view context) {
  std::string msg(context);
  std::string detail = drain_errors();
  if (!detail.empty()) {
    msg += ": ";
    msg += detail;
  }
  return Error(code, std::move(msg));
}

BioPtr mem_bio(std::string_view data) {
  if (data.size() > static_cast<std::size_t>(INT_MAX)) {
    throw Error(Code::kInvalidArgument, "input too large");
  }
  BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  check(bio != nullptr, "BIO_new_mem_buf");
  return bio;
}

std::string bio_contents(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  if (n <= 0 || data == nullptr) return {};
  return std::string(data, static_cast<std::size_t>(n));
}

}  // namespace wrenn::crypto::detail
