# The agent end to end: a real wrenn-agent in the test's own network namespace, real
# sandboxes from the busybox template, driven over its API and proxy.
set(WRENN_TEST_IMAGES ${CMAKE_BINARY_DIR}/test-images)
add_custom_command(
  OUTPUT ${WRENN_TEST_IMAGES}/busybox/etc/wrenn-template
  COMMAND ${CMAKE_COMMAND} -E make_directory ${WRENN_TEST_IMAGES}
  COMMAND bash ${CMAKE_SOURCE_DIR}/images/busybox/build.sh ${WRENN_TEST_IMAGES}/busybox ${SANDBOX_ENVD}
  DEPENDS envd ${CMAKE_SOURCE_DIR}/images/busybox/build.sh
  COMMENT "Building the busybox test template")
add_custom_target(busybox_test_image ALL DEPENDS ${WRENN_TEST_IMAGES}/busybox/etc/wrenn-template)

add_library(agent_test_support STATIC ${CMAKE_SOURCE_DIR}/test/support/agent_fixture.cpp)
target_link_libraries(agent_test_support PUBLIC test_main wrenn_proto)

foreach(t agent_lifecycle_test agent_isolation_test agent_restart_test)
  wrenn_add_test(${t} ${CMAKE_CURRENT_LIST_DIR}/${t}.cpp)
  target_link_libraries(${t} PRIVATE agent_test_support)
  add_dependencies(${t} wrenn-agent wrenn-nsinit envd busybox_test_image)
endforeach()

wrenn_add_test(agent_units_test ${CMAKE_CURRENT_LIST_DIR}/agent_units_test.cpp)
target_link_libraries(agent_units_test PRIVATE wrenn_agent_lib)
