# Sandbox manager, the agent API service and the wrenn-agent binary (included by CMakeLists.txt).
pkg_check_modules(SYSTEMD REQUIRED IMPORTED_TARGET libsystemd)
add_library(wrenn_agent_lib STATIC
  ${CMAKE_CURRENT_LIST_DIR}/sandbox/record.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sandbox/metrics.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sandbox/envd_client.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sandbox/manager.cpp
  ${CMAKE_CURRENT_LIST_DIR}/api/agent_service.cpp
  ${CMAKE_CURRENT_LIST_DIR}/registration.cpp
)
target_include_directories(wrenn_agent_lib PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(wrenn_agent_lib PUBLIC wrenn_common wrenn_proto wrenn_agent_net wrenn_agent_runtime
                      wrenn_agent_proxy OpenSSL::Crypto)

add_executable(wrenn-agent ${CMAKE_CURRENT_LIST_DIR}/main.cpp)
target_link_libraries(wrenn-agent PRIVATE wrenn_agent_lib wrenn_agent_tls wrenn_crypto PkgConfig::SYSTEMD)
add_dependencies(wrenn-agent envd wrenn-nsinit)
