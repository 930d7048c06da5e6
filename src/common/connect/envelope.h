// Connect streaming envelopes: 1 flag byte (0x01 compressed, 0x02 end-of-stream), a 4-byte
// big-endian length, then the payload (https://connectrpc.com/docs/protocol#streaming-rpcs).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace wrenn::connect {

inline constexpr std::uint8_t kFlagCompressed = 0x01;
inline constexpr std::uint8_t kFlagEndStream = 0x02;

struct Envelope {
  std::uint8_t flags = 0;
  std::string payload;
  bool end_stream() const { return flags & kFlagEndStream; }
};

std::string encode_envelope(std::uint8_t flags, std::string_view payload);

// Incremental decoder. feed() bytes as they arrive; next() yields whole envelopes.
// Throws wrenn::Error(resource_exhausted) as soon as a header announces a payload larger
// than max_message_bytes, and invalid_argument for a compressed frame (we never negotiate
// compression), so a hostile length never makes us buffer it.
class EnvelopeDecoder {
 public:
  explicit EnvelopeDecoder(std::size_t max_message_bytes) : max_(max_message_bytes) {}
  void feed(std::string_view bytes) { buf_.append(bytes); }
  std::optional<Envelope> next();
  // Bytes received that do not yet form a whole envelope.
  std::size_t pending() const { return buf_.size() - pos_; }

 private:
  std::size_t max_;
  std::string buf_;
  std::size_t pos_ = 0;
};

}  // namespace wrenn::connect
