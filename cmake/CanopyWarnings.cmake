# Warning and hardening flags shared by every Canopy target (canopy_warnings).
# -Wnull-dereference is left out: at -O3 g++ 12 reports false positives inside Boost.Asio.
# -Wrestrict is off: g++ 12 reports false positives inside std::string at -O2/-O3 (GCC bug 105329).
add_library(canopy_warnings INTERFACE)
target_compile_options(canopy_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
  -Wcast-align -Wunused -Woverloaded-virtual
  -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough -Wmissing-declarations)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  target_compile_options(canopy_warnings INTERFACE -Wno-restrict)
endif()
if(CANOPY_WERROR)
  target_compile_options(canopy_warnings INTERFACE -Werror)
endif()
if(CMAKE_BUILD_TYPE MATCHES "Rel" AND NOT CANOPY_SANITIZE)
  target_compile_definitions(canopy_warnings INTERFACE _FORTIFY_SOURCE=2)
endif()
target_compile_options(canopy_warnings INTERFACE -fstack-protector-strong)
target_link_options(canopy_warnings INTERFACE -Wl,-z,relro -Wl,-z,now)

if(CANOPY_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
if(CANOPY_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "CANOPY_FUZZ needs clang: configure with -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang")
  endif()
  # Coverage instrumentation for the code under test; the fuzz targets add the driver.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
