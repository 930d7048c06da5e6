#include "filesystem_service.h"

namespace wrenn::envd {
// Placeholder until the filesystem service lands: registers nothing.
void register_filesystem_service(connect::Router&, State&, boost::asio::io_context&) {}
}  // namespace wrenn::envd
