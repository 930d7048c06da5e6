# The control plane's host client against a real wrenn-agent with real sandboxes (each test
# case in its own network namespace, like test/agent/agent.cmake), plus a scripted fake
# agent for connection reuse and stale-connection retries.
wrenn_add_test(host_client_test ${CMAKE_CURRENT_LIST_DIR}/host_client_test.cpp)
target_link_libraries(host_client_test PRIVATE agent_test_support wrenn_cp_hosts)
add_dependencies(host_client_test wrenn-agent wrenn-nsinit envd busybox_test_image)

# Mutual TLS: the host client's TLS transport against the agent's TLS front.
wrenn_add_test(mtls_test ${CMAKE_CURRENT_LIST_DIR}/mtls_test.cpp)
target_link_libraries(mtls_test PRIVATE wrenn_cp_hosts wrenn_agent_tls wrenn_crypto)
