# The control plane core: a real wrenn-cp on a throwaway PostgreSQL (test/support/cp_fixture),
# real wrenn-agents in each test case's own network namespace where hosts are involved, and
# the scheduler and reconciler called directly against a real database.
#
# cp_test_support (cp_fixture.h) is shared with the capsule tests.
add_library(cp_test_support STATIC ${CMAKE_SOURCE_DIR}/test/support/cp_fixture.cpp)
target_link_libraries(cp_test_support PUBLIC test_main pg_test_support agent_test_support wrenn_cp)
add_dependencies(cp_test_support wrenn-cp wrenn-agent wrenn-nsinit envd busybox_test_image)

wrenn_add_test(cp_core_test ${CMAKE_CURRENT_LIST_DIR}/cp_core_test.cpp)
target_link_libraries(cp_core_test PRIVATE cp_test_support)

# Mutual TLS wired end to end: real wrenn-cp + real wrenn-agent (test/cp/mtls_wiring_test.cpp).
wrenn_add_test(mtls_wiring_test ${CMAKE_CURRENT_LIST_DIR}/mtls_wiring_test.cpp)
target_link_libraries(mtls_wiring_test PRIVATE cp_test_support wrenn_crypto)
