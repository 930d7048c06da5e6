# The spec library (src/spec): golden spec sets under test/spec/golden, the repository's
# own specs/, canonical JSON, content hash and field changes. Pure: no processes, no DB.
add_executable(spec_test ${CMAKE_CURRENT_LIST_DIR}/spec_test.cpp
                         ${CMAKE_SOURCE_DIR}/test/support/catch_main.cpp)
target_link_libraries(spec_test PRIVATE wrenn_spec Catch2::Catch2)
target_compile_definitions(spec_test PRIVATE
  WRENN_SPEC_GOLDEN_DIR="${CMAKE_CURRENT_LIST_DIR}/golden"
  WRENN_SPECS_DIR="${CMAKE_SOURCE_DIR}/specs"
  WRENN_IMAGES_DIR="${CMAKE_SOURCE_DIR}/images")
catch_discover_tests(spec_test)
