// Typed errors shared by every Wrenn component.
//
// Contract: code that fails raises wrenn::Error with a Code and a message naming what is
// wrong. The mapping Code -> Connect code name and Code -> HTTP status exists only here;
// nothing anywhere chooses a status by matching message text.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace wrenn {

// The Connect/gRPC status codes (https://connectrpc.com/docs/protocol#error-codes).
enum class Code {
  kCanceled,
  kUnknown,
  kInvalidArgument,
  kDeadlineExceeded,
  kNotFound,
  kAlreadyExists,
  kPermissionDenied,
  kResourceExhausted,
  kFailedPrecondition,
  kAborted,
  kOutOfRange,
  kUnimplemented,
  kInternal,
  kUnavailable,
  kDataLoss,
  kUnauthenticated,
};

// Lowercase snake name used on the wire ("not_found").
std::string_view code_name(Code code);
// Inverse of code_name; nullopt for names that are not Connect codes.
std::optional<Code> code_from_name(std::string_view name);
// HTTP status a Connect unary error carries (connect-go v1.19 mapping).
unsigned http_status(Code code);

class Error : public std::runtime_error {
 public:
  Error(Code code, std::string message) : std::runtime_error(std::move(message)), code_(code) {}
  Code code() const { return code_; }

 private:
  Code code_;
};

// Builds an Error from errno with a context prefix: "open /x: No such file or directory".
// ENOENT maps to not_found, EEXIST to already_exists, EACCES/EPERM to permission_denied,
// ENOSPC/EDQUOT to resource_exhausted, ENOTDIR/EISDIR/EINVAL/ENAMETOOLONG to
// invalid_argument, everything else to internal.
Error errno_error(int err, std::string_view context);

}  // namespace wrenn
