// Connect message codecs. The same generated protobuf classes serve both codecs: binary
// protobuf, and JSON via protobuf's proto3 JSON mapping (lowerCamelCase names, 64-bit
// integers as strings, bytes as base64, enums by name).
#pragma once

#include <google/protobuf/message.h>

#include <optional>
#include <string>
#include <string_view>

#include "error.h"

namespace wrenn::connect {

enum class Codec { kProto, kJson };

struct ContentType {
  Codec codec;
  bool streaming;  // application/connect+{proto,json}
};

// Parses a Content-Type header ("application/json; charset=utf-8", "application/connect+proto").
// nullopt for anything that is not a Connect content type.
std::optional<ContentType> parse_content_type(std::string_view header);
std::string content_type_string(ContentType ct);

// Throws Error(invalid_argument) naming the message type and what failed to parse.
void decode(Codec codec, std::string_view bytes, google::protobuf::Message& out);
std::string encode(Codec codec, const google::protobuf::Message& msg);

// Unary error body: {"code":"not_found","message":"..."}.
std::string error_json(const Error& err);
// End-of-stream payload: {} or {"error":{"code":..,"message":..}}.
std::string end_stream_json(const Error* err);
// Parses a unary error body or the error of an end-stream payload; for clients.
std::optional<Error> parse_error_json(std::string_view body);

}  // namespace wrenn::connect
