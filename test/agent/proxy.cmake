# Reverse proxy (/proxy/{id}/{port}/): real loopback upstreams, the real envd for one case.
wrenn_add_test(proxy_test ${CMAKE_CURRENT_LIST_DIR}/proxy_test.cpp)
target_link_libraries(proxy_test PRIVATE wrenn_agent_proxy)
add_dependencies(proxy_test envd)
