# FindCares.cmake: locate c-ares (Debian's libc-ares-dev), the asynchronous
# name resolver the loop drives for lookups that never block it.
#
# Debian's package ships a pkg-config file but no CMake package
# configuration; this module finds the header and library by hand.
#
# Imported target:
#   Cares::cares
# Result variables:
#   Cares_FOUND, Cares_VERSION, Cares_INCLUDE_DIR

find_path(Cares_INCLUDE_DIR NAMES ares.h)
find_library(Cares_LIBRARY NAMES cares)

if(Cares_INCLUDE_DIR AND EXISTS "${Cares_INCLUDE_DIR}/ares_version.h")
  file(STRINGS "${Cares_INCLUDE_DIR}/ares_version.h" cares_version_line
       REGEX "^#define ARES_VERSION_STR \"[0-9.]+\"")
  string(REGEX REPLACE "^#define ARES_VERSION_STR \"([0-9.]+)\".*" "\\1"
         Cares_VERSION "${cares_version_line}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Cares
  REQUIRED_VARS Cares_INCLUDE_DIR Cares_LIBRARY
  VERSION_VAR Cares_VERSION)

if(Cares_FOUND AND NOT TARGET Cares::cares)
  add_library(Cares::cares UNKNOWN IMPORTED)
  set_target_properties(Cares::cares PROPERTIES
    IMPORTED_LOCATION "${Cares_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${Cares_INCLUDE_DIR}")
endif()
mark_as_advanced(Cares_INCLUDE_DIR Cares_LIBRARY)
