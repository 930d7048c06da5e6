# Snapshots on the agent: CreateSnapshot / DeleteSnapshot against a real wrenn-agent with
# busybox sandboxes (test/agent/agent_snapshot_test.cpp).
wrenn_add_test(agent_snapshot_test ${CMAKE_CURRENT_LIST_DIR}/agent_snapshot_test.cpp)
target_link_libraries(agent_snapshot_test PRIVATE agent_test_support)
add_dependencies(agent_snapshot_test wrenn-agent wrenn-nsinit envd busybox_test_image)
