#include "connect/codec.h"

#include <google/protobuf/util/json_util.h>

#include <boost/json.hpp>

namespace wrenn::connect {

namespace {
std::string lower_trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}
}  // namespace

std::optional<ContentType> parse_content_type(std::string_view header) {
  auto semi = header.find(';');
  std::string base = lower_trim(header.substr(0, semi));
  if (base == "application/proto") return ContentType{Codec::kProto, false};
  if (base == "application/json") return ContentType{Codec::kJson, false};
  if (base == "application/connect+proto") return ContentType{Codec::kProto, true};
  if (base == "application/connect+json") return ContentType{Codec::kJson, true};
  return std::nullopt;
}

std::string content_type_string(ContentType ct) {
  if (ct.streaming) return ct.codec == Codec::kProto ? "application/connect+proto" : "application/connect+json";
  return ct.codec == Codec::kProto ? "application/proto" : "application/json";
}

void decode(Codec codec, std::string_view bytes, google::protobuf::Message& out) {
  out.Clear();
  if (codec == Codec::kProto) {
    if (!out.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
      throw Error(Code::kInvalidArgument,
                  "malformed protobuf for " + std::string(out.GetTypeName()));
    return;
  }
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;  // Connect: tolerate fields from newer clients.
  // An empty body is the empty message in Connect's JSON codec.
  std::string_view body = bytes.empty() ? std::string_view("{}") : bytes;
  auto st = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(body.data(), body.size()), &out, opts);
  if (!st.ok())
    throw Error(Code::kInvalidArgument, "malformed JSON for " + std::string(out.GetTypeName()) +
                                            ": " + std::string(st.message()));
}

std::string encode(Codec codec, const google::protobuf::Message& msg) {
  std::string out;
  if (codec == Codec::kProto) {
    msg.SerializeToString(&out);
    return out;
  }
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = false;  // lowerCamelCase, as the JSON mapping says.
  auto st = google::protobuf::util::MessageToJsonString(msg, &out, opts);
  if (!st.ok()) throw Error(Code::kInternal, "encoding JSON: " + std::string(st.message()));
  return out;
}

std::string error_json(const Error& err) {
  boost::json::object o;
  o["code"] = code_name(err.code());
  o["message"] = err.what();
  return boost::json::serialize(o);
}

std::string end_stream_json(const Error* err) {
  if (!err) return "{}";
  boost::json::object e;
  e["code"] = code_name(err->code());
  e["message"] = err->what();
  boost::json::object o;
  o["error"] = std::move(e);
  return boost::json::serialize(o);
}

std::optional<Error> parse_error_json(std::string_view body) {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto* obj = &v.as_object();
  if (auto* e = obj->if_contains("error"); e && e->is_object()) obj = &e->as_object();
  auto* code = obj->if_contains("code");
  if (!code || !code->is_string()) return std::nullopt;
  auto c = code_from_name(code->as_string()).value_or(Code::kUnknown);
  std::string msg;
  if (auto* m = obj->if_contains("message"); m && m->is_string()) msg = m->as_string();
  return Error(c, msg);
}

}  // namespace wrenn::connect
