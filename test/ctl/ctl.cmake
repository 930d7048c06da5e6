# wrennctl (src/ctl) end to end: the real binary against a real wrenn-cp on a throwaway
# PostgreSQL, and a registered agent for the sandbox commands (test/ctl/wrennctl_test.cpp).
if(TARGET cp_test_support)  # test/cp/cp_core.cmake
  wrenn_add_test(wrennctl_test ${CMAKE_CURRENT_LIST_DIR}/wrennctl_test.cpp)
  target_link_libraries(wrennctl_test PRIVATE cp_test_support)
  add_dependencies(wrennctl_test wrennctl)
endif()
