#include "http_receiver.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

namespace wrenn::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

struct PemPair {
  std::string cert;
  std::string key;
};

[[noreturn]] void ossl_fail(const char* what) {
  throw std::runtime_error(std::string("http_receiver: ") + what + " failed");
}

std::string bio_string(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(n));
}

void add_ext(X509* cert, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) ossl_fail("X509V3_EXT_conf_nid");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// A fresh P-256 key and a self-signed certificate for 127.0.0.1 / ::1 / localhost, valid
// from an hour ago for a day. It is its own trust anchor (CA:TRUE, as `openssl req -x509`).
PemPair make_self_signed() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (key == nullptr) ossl_fail("EVP_EC_gen");
  X509* cert = X509_new();
  if (cert == nullptr) ossl_fail("X509_new");
  X509_set_version(cert, 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("wrenn test receiver"), -1, -1,
                             0);
  X509_set_issuer_name(cert, name);
  add_ext(cert, NID_basic_constraints, "critical,CA:TRUE");
  add_ext(cert, NID_key_usage, "critical,digitalSignature,keyCertSign");
  add_ext(cert, NID_ext_key_usage, "serverAuth");
  add_ext(cert, NID_subject_key_identifier, "hash");
  add_ext(cert, NID_subject_alt_name, "IP:127.0.0.1,IP:::1,DNS:localhost");
  if (X509_sign(cert, key, EVP_sha256()) == 0) ossl_fail("X509_sign");

  PemPair out;
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, cert);
  out.cert = bio_string(b);
  BIO_free(b);
  b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
  out.key = bio_string(b);
  BIO_free(b);
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

struct HttpReceiver::Impl {
  ReceiverTls tls = ReceiverTls::kNone;
  PemPair pem;
  std::unique_ptr<ssl::context> ssl_ctx;
  asio::io_context ioc;  // only for sockets' executors; never run
  tcp::acceptor acceptor{ioc};
  unsigned short port = 0;
  std::thread accept_thread;

  mutable std::mutex mu;
  mutable std::condition_variable cv;  // new requests, stopping
  bool stopping = false;
  std::function<ReceiverReply(const ReceivedRequest&)> handler;
  std::vector<ReceivedRequest> received;
  std::set<int> open_fds;  // connections, to shut down on destruction
  std::map<std::thread::id, std::thread> conn_threads;
  std::vector<std::thread::id> finished;  // served connections whose threads can be joined

  void accept_loop() {
    for (;;) {
      tcp::socket sock(ioc);
      boost::system::error_code ec;
      acceptor.accept(sock, ec);
      std::lock_guard lk(mu);
      if (stopping) return;
      if (ec) continue;
      // Join what has finished, so a long run (the benchmark's 100,000 connections) does not
      // pile up threads.
      for (auto id : finished) {
        auto it = conn_threads.find(id);
        if (it == conn_threads.end()) continue;
        it->second.join();
        conn_threads.erase(it);
      }
      finished.clear();
      int fd = sock.native_handle();
      open_fds.insert(fd);
      std::thread t([this, s = std::make_shared<tcp::socket>(std::move(sock))]() mutable {
        serve(s);
        std::lock_guard lk(mu);
        finished.push_back(std::this_thread::get_id());
      });
      const auto id = t.get_id();
      conn_threads.emplace(id, std::move(t));
    }
  }

  // Removes fd from the set before the socket is closed (so the destructor never shuts
  // down a reused descriptor).
  void forget(int fd) {
    std::lock_guard lk(mu);
    open_fds.erase(fd);
  }

  void serve(std::shared_ptr<tcp::socket> sock) {
    int fd = sock->native_handle();
    try {
      if (ssl_ctx) {
        ssl::stream<tcp::socket&> stream(*sock, *ssl_ctx);
        stream.handshake(ssl::stream_base::server);
        exchange(stream);
        boost::system::error_code ec;
        stream.shutdown(ec);
      } else {
        exchange(*sock);
      }
    } catch (const std::exception&) {
      // The client went away, failed the TLS handshake, or we are stopping.
    }
    forget(fd);
    boost::system::error_code ec;
    sock->shutdown(tcp::socket::shutdown_both, ec);
    sock->close(ec);
  }

  template <typename Stream>
  void exchange(Stream& stream) {
    beast::flat_buffer buf;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(64 * 1024 * 1024);
      http::read(stream, buf, parser);  // throws on EOF: done
      auto& req = parser.get();
      ReceivedRequest r;
      r.method = std::string(req.method_string());
      r.target = std::string(req.target());
      for (const auto& f : req)
        r.headers[lower(std::string(f.name_string()))] = std::string(f.value());
      r.body = req.body();
      r.at = std::chrono::steady_clock::now();

      std::function<ReceiverReply(const ReceivedRequest&)> h;
      {
        std::lock_guard lk(mu);
        received.push_back(r);
        h = handler;
      }
      cv.notify_all();
      ReceiverReply reply = h ? h(r) : ReceiverReply{};
      if (reply.delay.count() > 0) {
        std::unique_lock lk(mu);
        if (cv.wait_for(lk, reply.delay, [&] { return stopping; })) return;
      }
      http::response<http::string_body> res{static_cast<http::status>(reply.status), req.version()};
      res.set(http::field::server, "wrenn-test-receiver");
      res.set(http::field::content_type, "text/plain");
      for (const auto& [k, v] : reply.headers) res.set(k, v);
      res.body() = reply.body;
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      http::write(stream, res);
      if (!res.keep_alive()) return;
    }
  }
};

HttpReceiver::HttpReceiver(ReceiverTls tls) : impl_(std::make_shared<Impl>()) {
  impl_->tls = tls;
  if (tls == ReceiverTls::kSelfSigned) {
    impl_->pem = make_self_signed();
    impl_->ssl_ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
    impl_->ssl_ctx->use_certificate_chain(asio::buffer(impl_->pem.cert));
    impl_->ssl_ctx->use_private_key(asio::buffer(impl_->pem.key), ssl::context::pem);
  }
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen();
  impl_->port = impl_->acceptor.local_endpoint().port();
  impl_->accept_thread = std::thread([impl = impl_.get()] { impl->accept_loop(); });
}

HttpReceiver::~HttpReceiver() {
  std::map<std::thread::id, std::thread> threads;
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
    // shutdown() wakes threads blocked in accept/recv on these descriptors (Linux).
    ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);
    for (int fd : impl_->open_fds) ::shutdown(fd, SHUT_RDWR);
  }
  impl_->cv.notify_all();
  impl_->accept_thread.join();
  {
    std::lock_guard lk(impl_->mu);
    threads.swap(impl_->conn_threads);
  }
  for (auto& [id, t] : threads) t.join();
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
}

unsigned short HttpReceiver::port() const {
  return impl_->port;
}

std::string HttpReceiver::url(const std::string& path) const {
  std::string scheme = impl_->tls == ReceiverTls::kSelfSigned ? "https" : "http";
  return scheme + "://127.0.0.1:" + std::to_string(impl_->port) + path;
}

std::string HttpReceiver::cert_pem() const {
  return impl_->pem.cert;
}

void HttpReceiver::set_handler(std::function<ReceiverReply(const ReceivedRequest&)> handler) {
  std::lock_guard lk(impl_->mu);
  impl_->handler = std::move(handler);
}

std::vector<ReceivedRequest> HttpReceiver::requests() const {
  std::lock_guard lk(impl_->mu);
  return impl_->received;
}

bool HttpReceiver::wait_for(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lk(impl_->mu);
  return impl_->cv.wait_for(lk, timeout, [&] { return impl_->received.size() >= n; });
}

void HttpReceiver::clear() {
  std::lock_guard lk(impl_->mu);
  impl_->received.clear();
}

}  // namespace wrenn::test
