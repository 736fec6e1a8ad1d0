# Installs the tact build into a fresh prefix, builds the consumer against
# it with find_package(tact), and runs it. With SOURCE_DIR, tact is first
# configured and built from there as a shared library (BUILD_SHARED_LIBS),
# the way a distribution packages it, and the consumer must load
# libtact.so.
file(REMOVE_RECURSE "${WORK_DIR}")
if(SOURCE_DIR)
  execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}"
                          -B "${WORK_DIR}/tact" -DBUILD_SHARED_LIBS=ON
                          -DCMAKE_BUILD_TYPE=Release
                          -DTACT_BUILD_TESTS=OFF -DTACT_BUILD_EXAMPLES=OFF
                          -DTACT_BUILD_BENCH=OFF
                  RESULT_VARIABLE rc OUTPUT_QUIET)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "configuring shared tact failed: ${rc}")
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/tact"
                          --parallel 2
                  RESULT_VARIABLE rc OUTPUT_QUIET)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "building shared tact failed: ${rc}")
  endif()
  set(TACT_BINARY_DIR "${WORK_DIR}/tact")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --install "${TACT_BINARY_DIR}"
                        --prefix "${WORK_DIR}/prefix"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "install failed: ${rc}")
endif()
# What a user gets: public headers only.
file(GLOB_RECURSE detail_headers "${WORK_DIR}/prefix/include/tact/*/detail/*")
if(detail_headers)
  message(FATAL_ERROR "detail headers installed: ${detail_headers}")
endif()
# A sanitizer build of tact needs the consumer built the same way (TSan
# sees races in code it does not instrument).
set(extra)
if(SANITIZE)
  set(extra "-DCMAKE_CXX_FLAGS=-fsanitize=${SANITIZE}"
            "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=${SANITIZE}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S "${CONSUMER_DIR}"
                        -B "${WORK_DIR}/build"
                        -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix ${extra}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the consumer failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/build"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the consumer failed: ${rc}")
endif()
if(SOURCE_DIR)
  execute_process(COMMAND readelf -d "${WORK_DIR}/build/consumer"
                  OUTPUT_VARIABLE dynamic)
  if(NOT dynamic MATCHES "libtact\\.so")
    message(FATAL_ERROR "the consumer does not load libtact.so:\n${dynamic}")
  endif()
endif()
execute_process(COMMAND "${WORK_DIR}/build/consumer"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out)
if(NOT rc EQUAL 0 OR NOT out MATCHES "installed")
  message(FATAL_ERROR "the consumer failed: ${rc} ${out}")
endif()
message(STATUS "consumer printed: ${out}")
file(REMOVE_RECURSE "${WORK_DIR}")
