# Network slots, pool, firewall, connect_in_netns: real kernel objects, each test case in
# its own network and mount namespaces (needs root / CAP_NET_ADMIN + CAP_SYS_ADMIN).
wrenn_add_test(net_test ${CMAKE_CURRENT_LIST_DIR}/net_test.cpp)
target_link_libraries(net_test PRIVATE wrenn_agent_net)
