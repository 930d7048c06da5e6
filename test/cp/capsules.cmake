# The capsule routes (src/cp/api/capsule*, exec_routes, file_routes, chunk_pipe,
# src/cp/store/capsules).
#  capsules_units_test: wire shapes, request validation, the chunk pipe, and the capsule
#    SQL against a throwaway PostgreSQL (no control plane needed).
#  capsules_test: every SDK endpoint through a real wrenn-cp with a real wrenn-agent
#    (test/support/cp_fixture, target cp_test_support from cp_core.cmake).
wrenn_add_test(capsules_units_test ${CMAKE_CURRENT_LIST_DIR}/capsules_units_test.cpp)
target_link_libraries(capsules_units_test PRIVATE wrenn_cp pg_test_support wrenn_crypto)

if(TARGET cp_test_support)  # test/cp/cp_core.cmake
  wrenn_add_test(capsules_test ${CMAKE_CURRENT_LIST_DIR}/capsules_test.cpp)
  target_link_libraries(capsules_test PRIVATE cp_test_support)
endif()

# port_proxy_test: {port}-{capsule}.<domain> through wrenn-cp and a registered agent.
if(TARGET cp_test_support)
  wrenn_add_test(port_proxy_test ${CMAKE_CURRENT_LIST_DIR}/port_proxy_test.cpp)
  target_link_libraries(port_proxy_test PRIVATE cp_test_support)
endif()
