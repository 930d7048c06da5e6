#include "api/api_error.h"

#include <boost/json/serialize.hpp>

#include "error.h"
#include "pg/connection.h"

namespace wrenn::cp {

namespace {

struct CodeInfo {
  ApiCode code;
  std::string_view name;
  unsigned status;
};

constexpr CodeInfo kCodes[] = {
    {ApiCode::kInvalidRequest, "invalid_request", 400},
    {ApiCode::kUnauthorized, "unauthorized", 401},
    {ApiCode::kForbidden, "forbidden", 403},
    {ApiCode::kAccountDeactivated, "account_deactivated", 403},
    {ApiCode::kNotFound, "not_found", 404},
    {ApiCode::kConflict, "conflict", 409},
    {ApiCode::kInvalidState, "invalid_state", 409},
    {ApiCode::kTemplateNameTaken, "template_name_taken", 409},
    {ApiCode::kNameReserved, "name_reserved", 409},
    {ApiCode::kRevisionConflict, "revision_conflict", 409},
    {ApiCode::kInvalidSpec, "invalid_spec", 400},
    {ApiCode::kHasActiveSandboxes, "has_active_sandboxes", 409},
    {ApiCode::kConcurrentSandboxLimit, "concurrent_sandbox_limit", 402},
    {ApiCode::kVcpuLimit, "vcpu_limit", 402},
    {ApiCode::kMemoryLimit, "memory_limit", 402},
    {ApiCode::kTooLarge, "too_large", 413},
    {ApiCode::kInternalError, "internal_error", 500},
    {ApiCode::kDbError, "db_error", 500},
    {ApiCode::kAgentError, "agent_error", 502},
    {ApiCode::kAgentUnimplemented, "agent_error", 501},
    {ApiCode::kAgentTimeout, "agent_error", 504},
    {ApiCode::kNoHostsAvailable, "no_hosts_available", 503},
    {ApiCode::kHostUnavailable, "host_unavailable", 503},
    {ApiCode::kMethodNotAllowed, "method_not_allowed", 405},
    {ApiCode::kDeliveryFailed, "delivery_failed", 502},
};

const CodeInfo& info(ApiCode code) {
  for (const auto& c : kCodes)
    if (c.code == code) return c;
  return kCodes[13];  // internal_error
}

constexpr std::string_view kInternalMessage = "an internal error occurred";

ApiError from_sql(const pg::SqlError& e) {
  switch (e.code()) {
    case Code::kAlreadyExists:
      return ApiError(ApiCode::kConflict, "conflicts with an existing resource");
    case Code::kUnavailable:
    case Code::kAborted:
    case Code::kDeadlineExceeded:
      return ApiError(ApiCode::kDbError, "database unavailable, try again");
    default:
      return ApiError(ApiCode::kInternalError, std::string(kInternalMessage));
  }
}

ApiError from_error(const Error& e) {
  switch (e.code()) {
    case Code::kInvalidArgument:
    case Code::kOutOfRange:
      return ApiError(ApiCode::kInvalidRequest, e.what());
    case Code::kNotFound:
      return ApiError(ApiCode::kNotFound, e.what());
    case Code::kAlreadyExists:
      return ApiError(ApiCode::kConflict, e.what());
    case Code::kFailedPrecondition:
      return ApiError(ApiCode::kInvalidState, e.what());
    case Code::kPermissionDenied:
      return ApiError(ApiCode::kForbidden, e.what());
    case Code::kUnauthenticated:
      return ApiError(ApiCode::kUnauthorized, e.what());
    case Code::kResourceExhausted:
      return ApiError(ApiCode::kTooLarge, e.what());
    case Code::kUnavailable:
      return ApiError(ApiCode::kHostUnavailable, e.what());
    case Code::kDeadlineExceeded:
      return ApiError(ApiCode::kAgentTimeout, e.what());
    case Code::kUnimplemented:
      return ApiError(ApiCode::kAgentUnimplemented, e.what());
    default:
      return ApiError(ApiCode::kInternalError, std::string(kInternalMessage));
  }
}

}  // namespace

std::string_view api_code_name(ApiCode code) {
  return info(code).name;
}

unsigned api_code_status(ApiCode code) {
  return info(code).status;
}

ApiError to_api_error(const std::exception& e) {
  if (const auto* api = dynamic_cast<const ApiError*>(&e)) return *api;
  if (const auto* sql = dynamic_cast<const pg::SqlError*>(&e)) return from_sql(*sql);
  if (const auto* err = dynamic_cast<const Error*>(&e)) return from_error(*err);
  return ApiError(ApiCode::kInternalError, std::string(kInternalMessage));
}

ApiError to_api_error(std::exception_ptr e) {
  try {
    if (e) std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return to_api_error(ex);
  } catch (...) {
  }
  return ApiError(ApiCode::kInternalError, std::string(kInternalMessage));
}

bool is_internal(const std::exception& e) {
  if (dynamic_cast<const ApiError*>(&e)) return false;
  const ApiCode c = to_api_error(e).code();
  return c == ApiCode::kInternalError || c == ApiCode::kDbError;
}

std::string error_body(const ApiError& e) {
  boost::json::object err;
  err["code"] = api_code_name(e.code());
  err["message"] = e.what();
  for (const auto& [k, v] : e.extra()) err[k] = v;
  boost::json::object body;
  body["error"] = std::move(err);
  std::string out = boost::json::serialize(body);
  out += '\n';
  return out;
}

}  // namespace wrenn::cp
