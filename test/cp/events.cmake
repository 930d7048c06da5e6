# Events and notification channels (src/cp/events): a real wrenn-cp on a throwaway
# PostgreSQL delivering to real local HTTP receivers (test/support/http_receiver.h).
if(NOT EXISTS ${CMAKE_SOURCE_DIR}/test/support/http_receiver.cpp)
  return()
endif()
add_library(http_receiver STATIC ${CMAKE_SOURCE_DIR}/test/support/http_receiver.cpp)
target_include_directories(http_receiver PUBLIC ${CMAKE_SOURCE_DIR}/test/support)
target_link_libraries(http_receiver PUBLIC wrenn_crypto Boost::headers OpenSSL::SSL Threads::Threads)

# Targets (SSRF), provider request shapes, signatures and the sender, without a server.
if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/events_units_test.cpp)
  wrenn_add_test(events_units_test ${CMAKE_CURRENT_LIST_DIR}/events_units_test.cpp)
  target_link_libraries(events_units_test PRIVATE wrenn_cp http_receiver)
endif()

if(TARGET cp_test_support)  # test/cp/cp_core.cmake
  foreach(t channels_test event_stream_test events_test)
    if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/${t}.cpp)
      wrenn_add_test(${t} ${CMAKE_CURRENT_LIST_DIR}/${t}.cpp)
      target_link_libraries(${t} PRIVATE cp_test_support http_receiver wrenn_crypto)
    endif()
  endforeach()
endif()
