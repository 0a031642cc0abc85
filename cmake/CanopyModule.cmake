# canopy_add_module(<name> SOURCES ... [DEPS ...] [PRIVATE_DEPS ...])
#   Declares the library canopy_<name> (alias canopy::<name>) for one DESIGN.md module.
#   Public headers live in include/canopy/<name>/; sources in src/<name>/.
function(canopy_add_module name)
  cmake_parse_arguments(M "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(canopy_${name} STATIC ${M_SOURCES})
  add_library(canopy::${name} ALIAS canopy_${name})
  target_include_directories(canopy_${name} PUBLIC
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_BINARY_DIR}/generated)
  target_link_libraries(canopy_${name} PUBLIC ${M_DEPS} PRIVATE canopy_warnings ${M_PRIVATE_DEPS})
endfunction()

# canopy_add_test(<name> SOURCES ... DEPS ... [LABELS ...])
#   A GoogleTest executable registered with ctest (one ctest entry per test case).
function(canopy_add_test name)
  if(NOT CANOPY_TESTS)
    return()
  endif()
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_DEPS} GTest::gtest_main GTest::gmock canopy_warnings)
  target_compile_definitions(${name} PRIVATE
    CANOPY_SOURCE_DIR="${PROJECT_SOURCE_DIR}" CANOPY_BINARY_DIR="${PROJECT_BINARY_DIR}")
  gtest_discover_tests(${name}
    PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "CANOPY_BINARY_DIR=${PROJECT_BINARY_DIR};CANOPY_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
    DISCOVERY_TIMEOUT 30)
endfunction()

# canopy_add_fuzzer(<name> SOURCE <file> DEPS ... CORPUS <dir>)
#   With CANOPY_FUZZ (clang): a libFuzzer binary, plus a ctest entry that fuzzes for
#   CANOPY_FUZZ_SECONDS starting from the seed corpus.
#   Without it: a replay binary that runs every seed through the target under the normal
#   compiler, so the corpus stays a regression test on every build.
set(CANOPY_FUZZ_SECONDS 20 CACHE STRING "Seconds each fuzz target runs under ctest")
function(canopy_add_fuzzer name)
  cmake_parse_arguments(F "" "SOURCE;CORPUS" "DEPS" ${ARGN})
  if(CANOPY_FUZZ)
    add_executable(${name} ${F_SOURCE})
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(${name} PRIVATE ${F_DEPS})
    set(_work ${CMAKE_CURRENT_BINARY_DIR}/${name}_corpus)
    add_test(NAME fuzz.${name}
      COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=1
        sh -c "mkdir -p '${_work}' && exec '$<TARGET_FILE:${name}>' -max_total_time=${CANOPY_FUZZ_SECONDS} -max_len=65536 -timeout=10 '${_work}' '${F_CORPUS}'")
    set_tests_properties(fuzz.${name} PROPERTIES LABELS fuzz TIMEOUT 600)
  elseif(CANOPY_TESTS)
    add_executable(${name}_replay ${F_SOURCE} ${PROJECT_SOURCE_DIR}/tests/support/fuzz_replay_main.cpp)
    target_link_libraries(${name}_replay PRIVATE ${F_DEPS})
    add_test(NAME fuzz_replay.${name} COMMAND ${name}_replay ${F_CORPUS})
    set_tests_properties(fuzz_replay.${name} PROPERTIES LABELS unit)
  endif()
endfunction()
