// Stand-in for the capsule routes, compiled instead of them when the build is configured
// with -DWRENN_CP_CAPSULE_ROUTES=OFF (e.g. while they do not compile). Registers nothing.
#include "api/capsule_routes.h"

namespace wrenn::cp {

void register_capsule_routes(ServerContext& ctx) {
  (void)ctx;
}

}  // namespace wrenn::cp
