// GET/POST /files: streamed download (Range, gzip) and streamed multipart upload.
#pragma once

#include <boost/asio/awaitable.hpp>

#include "http/server.h"
#include "state.h"

namespace wrenn::envd {

// Serves one /files request (any method; others answer 405). Performs its own access
// check (X-Access-Token or the v1 signature) when a token is set.
boost::asio::awaitable<void> serve_files(http::Exchange& ex, State& state);

}  // namespace wrenn::envd
