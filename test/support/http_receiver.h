// A local HTTP(S) receiver for tests of outbound deliveries: listens on 127.0.0.1 (an
// ephemeral port), records every request, and answers what the test's handler says.
//
// Usage:
//   wrenn::test::HttpReceiver rx;                    // plain HTTP
//   rx.set_handler([](const ReceivedRequest& r) { ReceiverReply a; a.status = 500; return a; });
//   ... point a channel at rx.url("/hook") ...
//   REQUIRE(rx.wait_for(1, 5s));
//   auto reqs = rx.requests();                       // method, target, headers, body, at
//   wrenn::test::HttpReceiver tls(ReceiverTls::kSelfSigned);  // HTTPS, cert for 127.0.0.1
//   tls.cert_pem();                                  // the certificate, to trust it
//
// Contract: each connection is served on its own thread; keep-alive is honoured; header
// names in ReceivedRequest::headers are lowercase. The handler runs on the connection's
// thread (it may sleep to simulate a slow receiver). Thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace wrenn::test {

struct ReceivedRequest {
  std::string method;  // "POST"
  std::string target;  // "/hook?x=1"
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;
  std::chrono::steady_clock::time_point at;
};

struct ReceiverReply {
  unsigned status = 200;
  std::string body = "ok";
  std::vector<std::pair<std::string, std::string>> headers;
  std::chrono::milliseconds delay{0};  // before answering
};

enum class ReceiverTls { kNone, kSelfSigned };

class HttpReceiver {
 public:
  explicit HttpReceiver(ReceiverTls tls = ReceiverTls::kNone);
  ~HttpReceiver();
  HttpReceiver(const HttpReceiver&) = delete;
  HttpReceiver& operator=(const HttpReceiver&) = delete;

  unsigned short port() const;
  // "http://127.0.0.1:<port><path>" (https with TLS).
  std::string url(const std::string& path = "/") const;
  // The self-signed certificate (PEM) with TLS; "" without.
  std::string cert_pem() const;

  void set_handler(std::function<ReceiverReply(const ReceivedRequest&)> handler);
  std::vector<ReceivedRequest> requests() const;
  // Waits until at least n requests arrived; false on timeout.
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout) const;
  void clear();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace wrenn::test
