# CTest script: the layer as a user installs it. `cmake --install BUILD_DIR --prefix P`, then a small kqueue
# program compiled with `pkg-config --cflags --libs kqueue-compat` from P alone, and run. Then the installed tree
# is moved elsewhere and the same is done again: the .pc file must point wherever it now lies.
#   cmake -DBUILD_DIR=... -DWORK_DIR=... -DCXX=... -DEXTRA_FLAGS=... -P install_test.cmake
cmake_minimum_required(VERSION 3.21)

function(fail what)
  message(FATAL_ERROR "install test: ${what}")
endfunction()

find_program(PKG_CONFIG NAMES pkg-config pkgconf)
if(NOT PKG_CONFIG)
  fail("pkg-config is not installed (Debian: apt-get install pkg-config; ./kqlab test installs it as root)")
endif()

# Compiles and runs the program against the layer installed under `prefix`.
function(build_and_run prefix)
  file(GLOB_RECURSE pc_files "${prefix}/*/kqueue-compat.pc")
  list(LENGTH pc_files found)
  if(NOT found EQUAL 1)
    fail("expected one kqueue-compat.pc under ${prefix}, found: ${pc_files}")
  endif()
  get_filename_component(pc_dir "${pc_files}" DIRECTORY)
  # Only the installed tree is searched: a kqueue-compat.pc elsewhere on the machine must not answer.
  execute_process(COMMAND ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH= PKG_CONFIG_LIBDIR=${pc_dir}
                          ${PKG_CONFIG} --cflags --libs kqueue-compat
                  OUTPUT_VARIABLE flags ERROR_VARIABLE errors RESULT_VARIABLE status OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(status)
    fail("pkg-config --cflags --libs kqueue-compat failed: ${errors}")
  endif()
  separate_arguments(flag_list UNIX_COMMAND "${flags}")
  foreach(flag IN LISTS flag_list)
    if(flag MATCHES "^-[IL](.*)$")
      get_filename_component(dir "${CMAKE_MATCH_1}" REALPATH)
      get_filename_component(real_prefix "${prefix}" REALPATH)
      string(FIND "${dir}/" "${real_prefix}/" at)
      if(NOT at EQUAL 0)
        fail("pkg-config gave ${flag}, outside the prefix ${prefix} (all: ${flags})")
      endif()
      if(flag MATCHES "^-L")
        set(libdir "${dir}")
      endif()
    endif()
  endforeach()
  if(NOT libdir)
    fail("pkg-config gave no -L directory: ${flags}")
  endif()
  set(program "${prefix}/../timer_once")
  separate_arguments(extra UNIX_COMMAND "${EXTRA_FLAGS}")
  execute_process(COMMAND ${CXX} -std=c++20 ${extra} ${CMAKE_CURRENT_LIST_DIR}/install_probe.cpp -o ${program}
                          ${flag_list} -Wl,-rpath,${libdir}
                  OUTPUT_VARIABLE out ERROR_VARIABLE out RESULT_VARIABLE status)
  if(status)
    fail("compiling a kqueue program with pkg-config's flags (${flags}) failed:\n${out}")
  endif()
  execute_process(COMMAND ${program} OUTPUT_VARIABLE out ERROR_VARIABLE out RESULT_VARIABLE status)
  if(NOT status EQUAL 0 OR NOT out MATCHES "timer fired")
    fail("the installed program did not run as expected (status ${status}):\n${out}")
  endif()
  message(STATUS "${prefix}: pkg-config gave ${flags}; the program ran: ${out}")
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/first/prefix")
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix}
                OUTPUT_VARIABLE out ERROR_VARIABLE out RESULT_VARIABLE status)
if(status)
  fail("cmake --install ${BUILD_DIR} --prefix ${prefix} failed:\n${out}")
endif()
build_and_run("${prefix}")

# Relocated: the same tree, moved.
file(MAKE_DIRECTORY "${WORK_DIR}/moved")
file(RENAME "${prefix}" "${WORK_DIR}/moved/prefix")
build_and_run("${WORK_DIR}/moved/prefix")
file(REMOVE_RECURSE "${WORK_DIR}")
