// Blocking Connect RPC client over HTTP/1.1 (Boost.Beast). Used by tests, benchmarks and
// command-line tools; one call at a time per Client (it holds one keep-alive connection).
//
// Errors: every call throws wrenn::Error — the server's Connect error with its code and
// message, or unavailable when the server cannot be reached.
#pragma once

#include <google/protobuf/message.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "connect/codec.h"
#include "connect/envelope.h"

namespace wrenn::connect {

using Headers = std::map<std::string, std::string>;

class Client {
 public:
  Client(std::string host, unsigned short port, Codec codec = Codec::kProto);
  ~Client();
  Codec codec() const { return codec_; }
  // Headers sent with every call (Authorization, X-Access-Token, ...).
  Headers& default_headers() { return default_headers_; }

  void unary(const std::string& path, const google::protobuf::Message& req, google::protobuf::Message& resp,
             const Headers& headers = {});

  // A server-streaming call in progress. next() decodes the next message into out and
  // returns false at the end of the stream; an error carried by the end-of-stream message
  // is thrown from next().
  class Stream {
   public:
    bool next(google::protobuf::Message& out);
    ~Stream();

   private:
    friend class Client;
    explicit Stream(Client& c);
    Client& client_;
    boost::beast::http::response_parser<boost::beast::http::buffer_body> parser_;
    EnvelopeDecoder decoder_;
    bool done_ = false;
  };
  std::unique_ptr<Stream> server_stream(const std::string& path, const google::protobuf::Message& req,
                                        const Headers& headers = {});

  // A client-streaming call: open, send() any number of messages, then finish().
  class Upload {
   public:
    void send(const google::protobuf::Message& msg);
    void finish(google::protobuf::Message& resp);

   private:
    friend class Client;
    explicit Upload(Client& c) : client_(c) {}
    Client& client_;
  };
  std::unique_ptr<Upload> client_stream(const std::string& path, const Headers& headers = {});

  // Drops the connection (the next call reconnects).
  void disconnect();

 private:
  void ensure_connected();
  boost::beast::http::request<boost::beast::http::string_body> make_request(const std::string& path,
                                                                            const Headers& headers, bool streaming);

  std::string host_;
  unsigned short port_;
  Codec codec_;
  Headers default_headers_;
  boost::asio::io_context io_;
  std::optional<boost::beast::tcp_stream> stream_;
  boost::beast::flat_buffer buffer_;
};

}  // namespace wrenn::connect
