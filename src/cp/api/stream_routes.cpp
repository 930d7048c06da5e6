// WebSocket routes of the capsule API (reference §4): exec stream, process attach, PTY.
#include "api/capsule_routes.h"

namespace wrenn::cp::capsule_routes {

void register_stream_routes(ServerContext& ctx) {
  (void)ctx;
}

}  // namespace wrenn::cp::capsule_routes
