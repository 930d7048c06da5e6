// The error body of envd's plain HTTP endpoints: {"code":<http status>,"message":"..."}
// (what existing envd clients parse). Connect routes use the Connect format instead.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json.hpp>

#include "error.h"
#include "http/server.h"

namespace wrenn::envd {

inline boost::asio::awaitable<void> send_http_error(http::Exchange& ex, unsigned status, std::string_view message) {
  boost::json::object o;
  o["code"] = status;
  o["message"] = message;
  auto res = http::make_response(static_cast<http::bhttp::status>(status), "application/json",
                                 boost::json::serialize(o));
  res.set(http::bhttp::field::cache_control, "no-store");
  co_await ex.send(std::move(res));
}

inline boost::asio::awaitable<void> send_http_error(http::Exchange& ex, const Error& e) {
  co_await send_http_error(ex, http_status(e.code()), e.what());
}

}  // namespace wrenn::envd
