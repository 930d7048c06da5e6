#include "error.h"

#include <cerrno>
#include <cstring>

namespace wrenn {

namespace {
struct CodeInfo {
  Code code;
  std::string_view name;
  unsigned http;
};
constexpr CodeInfo kCodes[] = {
    {Code::kCanceled, "canceled", 499},
    {Code::kUnknown, "unknown", 500},
    {Code::kInvalidArgument, "invalid_argument", 400},
    {Code::kDeadlineExceeded, "deadline_exceeded", 504},
    {Code::kNotFound, "not_found", 404},
    {Code::kAlreadyExists, "already_exists", 409},
    {Code::kPermissionDenied, "permission_denied", 403},
    {Code::kResourceExhausted, "resource_exhausted", 429},
    {Code::kFailedPrecondition, "failed_precondition", 400},
    {Code::kAborted, "aborted", 409},
    {Code::kOutOfRange, "out_of_range", 400},
    {Code::kUnimplemented, "unimplemented", 501},
    {Code::kInternal, "internal", 500},
    {Code::kUnavailable, "unavailable", 503},
    {Code::kDataLoss, "data_loss", 500},
    {Code::kUnauthenticated, "unauthenticated", 401},
};
}  // namespace

std::string_view code_name(Code code) {
  for (const auto& c : kCodes)
    if (c.code == code) return c.name;
  return "unknown";
}

std::optional<Code> code_from_name(std::string_view name) {
  for (const auto& c : kCodes)
    if (c.name == name) return c.code;
  return std::nullopt;
}

unsigned http_status(Code code) {
  for (const auto& c : kCodes)
    if (c.code == code) return c.http;
  return 500;
}

Error errno_error(int err, std::string_view context) {
  Code code = Code::kInternal;
  switch (err) {
    case ENOENT: code = Code::kNotFound; break;
    case EEXIST: code = Code::kAlreadyExists; break;
    case EACCES:
    case EPERM: code = Code::kPermissionDenied; break;
    case ENOSPC:
    case EDQUOT: code = Code::kResourceExhausted; break;
    case ENOTDIR:
    case EISDIR:
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP: code = Code::kInvalidArgument; break;
    default: break;
  }
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  return Error(code, std::move(msg));
}

}  // namespace wrenn
