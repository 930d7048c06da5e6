#include "connect/envelope.h"

#include "error.h"

namespace wrenn::connect {

std::string encode_envelope(std::uint8_t flags, std::string_view payload) {
  std::string out;
  out.reserve(5 + payload.size());
  auto n = static_cast<std::uint32_t>(payload.size());
  out.push_back(static_cast<char>(flags));
  out.push_back(static_cast<char>((n >> 24) & 0xff));
  out.push_back(static_cast<char>((n >> 16) & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  out.push_back(static_cast<char>(n & 0xff));
  out.append(payload);
  return out;
}

std::optional<Envelope> EnvelopeDecoder::next() {
  if (buf_.size() - pos_ < 5) return std::nullopt;
  const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + pos_);
  std::uint8_t flags = p[0];
  std::uint32_t n = (std::uint32_t(p[1]) << 24) | (std::uint32_t(p[2]) << 16) |
                    (std::uint32_t(p[3]) << 8) | std::uint32_t(p[4]);
  if (n > max_)
    throw Error(Code::kResourceExhausted, "message of " + std::to_string(n) +
                                              " bytes exceeds the limit of " +
                                              std::to_string(max_) + " bytes");
  if (flags & kFlagCompressed)
    throw Error(Code::kInvalidArgument, "compressed message received but no compression was negotiated");
  if (buf_.size() - pos_ < 5 + std::size_t(n)) return std::nullopt;
  Envelope e;
  e.flags = flags;
  e.payload.assign(buf_, pos_ + 5, n);
  pos_ += 5 + n;
  // Compact once the consumed prefix dominates, keeping feed() amortised O(1).
  if (pos_ > 65536 && pos_ * 2 > buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  return e;
}

}  // namespace wrenn::connect
