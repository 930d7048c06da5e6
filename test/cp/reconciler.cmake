# The fleet reconciler (src/cp/fleet/reconciler.*): a real wrenn-cp with a 1 s fleet
# interval, real agents, specs applied through the REST API; test/cp/reconciler_test.cpp.
if(TARGET cp_test_support)  # test/cp/cp_core.cmake
  wrenn_add_test(reconciler_test ${CMAKE_CURRENT_LIST_DIR}/reconciler_test.cpp)
  target_link_libraries(reconciler_test PRIVATE cp_test_support wrenn_crypto)
endif()
