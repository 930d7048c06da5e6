# The capsule WebSocket routes (src/cp/api/stream_routes.cpp): exec stream, process attach
# and PTY through a real wrenn-cp with a real wrenn-agent (test/support/cp_fixture, target
# cp_test_support from cp_core.cmake), with a Beast WebSocket client.
if(TARGET cp_test_support)  # test/cp/cp_core.cmake
  wrenn_add_test(streams_test ${CMAKE_CURRENT_LIST_DIR}/streams_test.cpp)
  target_link_libraries(streams_test PRIVATE cp_test_support wrenn_crypto)
endif()
