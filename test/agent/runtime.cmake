# ns runtime and overlay volume tests: real namespaces, cgroups, loop devices (root only).
wrenn_add_test(runtime_test runtime_test.cpp)
target_link_libraries(runtime_test PRIVATE wrenn_agent_runtime)
add_dependencies(runtime_test wrenn-nsinit envd envd-exec runtime_probe)

# A static probe copied into test templates: reports the errno of privileged operations
# from inside a sandbox. Static, so no sanitizer runtime (it runs in a busybox root).
add_executable(runtime_probe runtime_probe.cpp)
target_compile_options(runtime_probe PRIVATE -fno-sanitize=all)
target_link_options(runtime_probe PRIVATE -fno-sanitize=all -static)
target_compile_definitions(runtime_test PRIVATE WRENN_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
