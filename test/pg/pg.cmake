# PostgreSQL layer (src/pg): connections, pool, migrations and the embedded server,
# against real throwaway servers (test/support/pg_fixture.h).
add_library(pg_test_support STATIC ${CMAKE_SOURCE_DIR}/test/support/pg_fixture.cpp)
target_link_libraries(pg_test_support PUBLIC test_main wrenn_pg)

wrenn_add_test(pg_test ${CMAKE_CURRENT_LIST_DIR}/pg_test.cpp)
target_link_libraries(pg_test PRIVATE wrenn_pg pg_test_support)
