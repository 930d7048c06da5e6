// Boost.JSON and Boost.URL compiled into the common library (their header-only mode), so
// static binaries such as envd need no separate Boost archives.
#include <boost/json/src.hpp>
#include <boost/url/src.hpp>
