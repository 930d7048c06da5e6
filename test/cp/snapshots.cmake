# Snapshots through the REST API (src/cp/api/snapshot_routes.cpp, store/templates): a real
# wrenn-cp with a real wrenn-agent (cp_fixture), test/cp/snapshots_test.cpp.
if(TARGET cp_test_support)  # test/cp/cp_core.cmake
  wrenn_add_test(snapshots_test ${CMAKE_CURRENT_LIST_DIR}/snapshots_test.cpp)
  target_link_libraries(snapshots_test PRIVATE cp_test_support)
endif()
