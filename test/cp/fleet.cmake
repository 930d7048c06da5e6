# The declarative fleet's plan and apply (src/cp/fleet): a real wrenn-cp on a throwaway
# PostgreSQL, specs posted as text, test/cp/fleet_test.cpp.
if(TARGET cp_test_support)  # test/cp/cp_core.cmake
  wrenn_add_test(fleet_test ${CMAKE_CURRENT_LIST_DIR}/fleet_test.cpp)
  target_link_libraries(fleet_test PRIVATE cp_test_support wrenn_crypto)
endif()
