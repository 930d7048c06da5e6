#include "files_http.h"

#include "http_errors.h"

namespace wrenn::envd {
// Placeholder until /files lands.
boost::asio::awaitable<void> serve_files(http::Exchange& ex, State&) {
  co_await send_http_error(ex, 501, "/files is not implemented yet");
}
}  // namespace wrenn::envd
