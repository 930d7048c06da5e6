// A small synchronous HTTP(S) client for wrennctl: one request per connection to the
// control plane, with a deadline and a response body limit.
//
// Contract:
//  - HttpClient(base) takes the control plane's URL ("http://host:port" or "https://…",
//    optionally with a path prefix that is put before every request target). A malformed
//    URL or an unsupported scheme throws UsageError at construction.
//  - request() opens a connection, sends one request (X-API-Key when an API key is set,
//    Content-Type application/json when there is a body), reads the whole response and
//    closes. Any HTTP status is returned, not thrown: the caller interprets it.
//  - When the server cannot be reached (DNS, connect, TLS handshake or certificate check,
//    the deadline, a malformed or oversized response) it throws TransportError whose
//    reason() is a short lowercase cause ("connection refused", "timed out after 60 s",
//    "TLS certificate verification failed: …").
//  - HTTPS verifies the server's certificate chain and host name against the system
//    trust store, or against ca_cert_file alone when it is set.
// Thread-safety: an HttpClient holds no connection; request() is safe to call from one
// thread at a time.
#pragma once

#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace wrenn::ctl {

struct ClientOptions {
  std::string base_url;              // the control plane, e.g. "http://127.0.0.1:8000"
  std::string api_key;               // sent as X-API-Key when not empty
  std::string ca_cert_file;          // PEM bundle trusted for https instead of the system store
  std::chrono::seconds timeout{60};  // whole request, connect to last byte
  std::size_t body_limit = std::size_t{256} << 20;  // largest response body accepted
};

struct HttpResponse {
  unsigned status = 0;
  std::string body;
  std::string content_type;
};

// A wrong invocation (bad URL, bad flag): the message is for the user as is.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The control plane could not be reached or did not answer with HTTP.
class TransportError : public std::runtime_error {
 public:
  TransportError(std::string url, std::string reason)
      : std::runtime_error("cannot reach the control plane at " + url + ": " + reason),
        url_(std::move(url)),
        reason_(std::move(reason)) {}
  const std::string& url() const { return url_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string url_;
  std::string reason_;
};

class HttpClient {
 public:
  explicit HttpClient(ClientOptions options);

  HttpResponse request(boost::beast::http::verb method, const std::string& target,
                       const std::string& body = "") const;

  const ClientOptions& options() const { return options_; }
  // The base URL as given (without a trailing '/').
  const std::string& url() const { return options_.base_url; }

 private:
  ClientOptions options_;
  bool tls_ = false;
  std::string host_;
  std::string port_;
  std::string prefix_;  // path prefix without trailing '/'
};

}  // namespace wrenn::ctl
