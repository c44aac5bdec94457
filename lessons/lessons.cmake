# How a lesson program is built, shared by lessons/ (the exercises), solutions/, the student's workspace/ and the
# harness's mutants. Each tree mirrors the others: a directory NN-topic/ per lesson.
#
# Most lessons are one program: the *.cpp files of NN-topic/. A lesson with several programs (09 builds the same
# server on kqueue and on epoll; 10 builds a reactor, two servers on it and its unit tests) gives each program a
# subdirectory, NN-topic/<program>/, and keeps what its programs share (sources and headers) at its top level.
#
# Two facts about a program are read from its sources, where the reason for them is written:
#   - one that includes <sys/epoll.h> is written for Linux's own interface: it is built only where there is one
#     (KQLAB_HAVE_EPOLL, decided once in the top-level CMakeLists.txt), and CMake says which program it leaves out;
#   - one that includes <doctest/doctest.h> is a unit-test program: linked with doctest's main, built only where
#     doctest is installed.
include_guard(GLOBAL)

find_path(DOCTEST_INCLUDE_DIR doctest/doctest.h)

# kqlab_add_lesson_tree(<tree> <kind> [EXCLUDE_FROM_ALL] [WARNINGS_NOT_ERRORS] [UNIT_TESTS <variable>]
#                       [REUSE <base-kind> <base-tree>] [PRECOMPILED_HEADERS <target>])
#
# For each lesson directory <tree>/NN-topic/, builds the target <kind>_NN-topic: the lesson's program, into
# ${CMAKE_BINARY_DIR}/bin/<kind>/NN-topic, which the harness runs with `--impl <kind>`. For a lesson with several
# programs, <kind>_NN-topic builds them all, each as <kind>_NN-topic_<program> into bin/<kind>/NN-topic/<program>.
#   EXCLUDE_FROM_ALL     built only when asked for by name (./kqlab check, the mutant tests), so a half-edited copy
#                        never breaks the project's build.
#   WARNINGS_NOT_ERRORS  warnings are shown but do not stop the build, even when KQLAB_WERROR is on: a student's
#                        unused variable is advice, not a failure.
#   UNIT_TESTS           sets <variable> to the unit-test programs' targets, for the caller to register with CTest.
#   REUSE                <tree> is a copy of <base-tree> (already added as <base-kind>, in this directory) with a few
#                        .cpp files changed (a mutant: one mistake put back): only those are compiled, and the
#                        objects of the others are taken from the <base-kind> targets. A mutant then costs one
#                        compile, not one per file of its lesson. A changed header changes every file that includes
#                        it: then the lesson is compiled whole, as without REUSE.
#   PRECOMPILED_HEADERS  compile with the headers <target> precompiled (target_precompile_headers(REUSE_FROM)): for the
#                        mutants, a hundred or so compiles of one file each, whose standard headers would otherwise be
#                        parsed again by every one. Never for code a student writes: a precompiled header is an
#                        invisible #include, and a missing #include must fail there as it would anywhere.
function(kqlab_add_lesson_tree tree kind)
  cmake_parse_arguments(PARSE_ARGV 2 arg "EXCLUDE_FROM_ALL;WARNINGS_NOT_ERRORS" "UNIT_TESTS;PRECOMPILED_HEADERS"
                        "REUSE")
  set(unit_test_targets)
  file(GLOB lesson_dirs LIST_DIRECTORIES true CONFIGURE_DEPENDS ${tree}/[0-9][0-9]-*)
  foreach(dir IN LISTS lesson_dirs)
    if(NOT IS_DIRECTORY ${dir})
      continue()
    endif()
    get_filename_component(lesson ${dir} NAME)
    file(GLOB shared_sources CONFIGURE_DEPENDS ${dir}/*.cpp)
    file(GLOB children LIST_DIRECTORIES true CONFIGURE_DEPENDS ${dir}/*)
    set(programs)
    foreach(child IN LISTS children)
      file(GLOB child_sources CONFIGURE_DEPENDS ${child}/*.cpp)
      if(IS_DIRECTORY ${child} AND child_sources)
        get_filename_component(program ${child} NAME)
        list(APPEND programs ${program})
      endif()
    endforeach()

    # With REUSE: the base's lesson, and the .cpp files that differ from it (unset: compile the lesson whole).
    unset(changed)
    if(arg_REUSE)
      list(GET arg_REUSE 0 base_kind)
      list(GET arg_REUSE 1 base_tree)
      _kqlab_changed_sources(${dir} ${base_tree}/${lesson} changed)
    endif()

    if(NOT programs)
      # One program: the lesson's *.cpp.
      if(shared_sources)
        _kqlab_add_program(${kind}_${lesson} ${lesson} ${CMAKE_BINARY_DIR}/bin/${kind} "${shared_sources}" "" "")
      endif()
      continue()
    endif()

    # Several programs: the top level's *.cpp compiled once, into each; the top level's headers visible to all.
    set(shared)
    if(shared_sources AND NOT DEFINED changed)  # (with REUSE, each program takes the base's objects instead)
      set(shared ${kind}_${lesson}_shared)
      add_library(${shared} OBJECT ${shared_sources})
      target_include_directories(${shared} PUBLIC ${dir})
      target_link_libraries(${shared} PUBLIC kqlab_common)
      _kqlab_apply_options(${shared})
    endif()
    add_custom_target(${kind}_${lesson})
    foreach(program IN LISTS programs)
      file(GLOB sources CONFIGURE_DEPENDS ${dir}/${program}/*.cpp)
      set(target ${kind}_${lesson}_${program})
      _kqlab_add_program(${target} ${program} ${CMAKE_BINARY_DIR}/bin/${kind}/${lesson} "${sources}" "${shared}"
                         ${dir})
      if(TARGET ${target})
        add_dependencies(${kind}_${lesson} ${target})
        get_target_property(is_unit_test ${target} KQLAB_UNIT_TEST)
        if(is_unit_test)
          list(APPEND unit_test_targets ${target})
        endif()
      endif()
    endforeach()
  endforeach()
  if(arg_UNIT_TESTS)
    set(${arg_UNIT_TESTS} ${unit_test_targets} PARENT_SCOPE)
  endif()
endfunction()

# One program, named <name>, into <directory>: <sources> plus the <shared> object library if any, with the
# lesson's top-level <include_dir> (if any) for its headers. Left out, with a message, where the platform or doctest
# it needs is missing.
function(_kqlab_add_program target name directory sources shared include_dir)
  set(uses_epoll FALSE)
  set(uses_doctest FALSE)
  foreach(source IN LISTS sources)
    file(STRINGS ${source} includes REGEX "^#include <(sys/epoll|doctest/doctest)\\.h>")
    if(includes MATCHES "sys/epoll")
      set(uses_epoll TRUE)
    endif()
    if(includes MATCHES "doctest")
      set(uses_doctest TRUE)
    endif()
  endforeach()
  if(uses_epoll AND NOT KQLAB_HAVE_EPOLL)
    message(STATUS "kqlab: not building ${target}: it is written for Linux's epoll, which this platform lacks")
    return()
  endif()
  if(uses_doctest AND NOT DOCTEST_INCLUDE_DIR)
    message(STATUS "kqlab: not building ${target}: doctest is not installed (Debian: apt-get install doctest-dev; "
                   "macOS: brew install doctest; FreeBSD: pkg install doctest)")
    return()
  endif()

  # With REUSE (read from kqlab_add_lesson_tree's scope): compile only the changed sources, among the program's own
  # and its lesson's top level, and link the base's objects of the others.
  string(LENGTH "${kind}" length)
  string(SUBSTRING ${target} ${length} -1 suffix)
  if(DEFINED changed AND TARGET ${base_kind}${suffix})
    set(compiled)
    set(top_level)
    set(objects $<FILTER:$<TARGET_OBJECTS:${base_kind}${suffix}>,EXCLUDE,${changed_objects}>)
    if(TARGET ${base_kind}_${lesson}_shared)
      list(APPEND objects $<FILTER:$<TARGET_OBJECTS:${base_kind}_${lesson}_shared>,EXCLUDE,${changed_objects}>)
      file(GLOB top_level CONFIGURE_DEPENDS ${include_dir}/*.cpp)
    endif()
    foreach(source IN LISTS sources top_level)
      if(source IN_LIST changed)
        list(APPEND compiled ${source})
      endif()
    endforeach()
    add_executable(${target} ${compiled} ${objects})
    add_dependencies(${target} ${base_kind}${suffix})
  else()
    add_executable(${target} ${sources})
  endif()
  target_link_libraries(${target} PRIVATE kqlab_common ${shared})
  if(include_dir)
    target_include_directories(${target} PRIVATE ${include_dir})
  endif()
  if(uses_doctest)
    _kqlab_doctest_main()
    target_link_libraries(${target} PRIVATE kqlab_doctest_main)
    set_target_properties(${target} PROPERTIES KQLAB_UNIT_TEST TRUE)
  endif()
  set_target_properties(${target} PROPERTIES OUTPUT_NAME ${name} RUNTIME_OUTPUT_DIRECTORY ${directory})
  _kqlab_apply_options(${target})
endfunction()

# Sets <variable> to the .cpp files of <dir> that differ from their copies in <base_dir> (or are not there), and
# changed_objects, in the caller's scope, to a regular expression that matches the base's object files of them. Unset
# if a file other than a .cpp differs (a header: every file that includes it changes), or if nothing does.
function(_kqlab_changed_sources dir base_dir variable)
  set(changed)
  set(patterns)
  get_filename_component(lesson ${dir} NAME)
  file(GLOB_RECURSE files RELATIVE ${dir} ${dir}/*)
  foreach(file IN LISTS files)
    if(EXISTS ${base_dir}/${file})
      file(SHA256 ${dir}/${file} mine)
      file(SHA256 ${base_dir}/${file} theirs)
      if(mine STREQUAL theirs)
        continue()
      endif()
    endif()
    if(NOT file MATCHES "\\.cpp$")
      unset(${variable} PARENT_SCOPE)
      return()
    endif()
    list(APPEND changed ${dir}/${file})
    string(REGEX REPLACE "[.+]" "[\\0]" escaped "${file}")
    list(APPEND patterns "/${lesson}/${escaped}[.]o$")
  endforeach()
  if(NOT changed)
    unset(${variable} PARENT_SCOPE)
    return()
  endif()
  list(JOIN patterns "|" changed_objects)
  set(${variable} ${changed} PARENT_SCOPE)
  set(changed_objects "${changed_objects}" PARENT_SCOPE)
endfunction()

# The options kqlab_add_lesson_tree was given, for one target (read from the caller's scope).
macro(_kqlab_apply_options target)
  if(arg_EXCLUDE_FROM_ALL)
    set_target_properties(${target} PROPERTIES EXCLUDE_FROM_ALL TRUE)
  endif()
  if(arg_WARNINGS_NOT_ERRORS)
    target_compile_options(${target} PRIVATE -Wno-error)
  endif()
  if(arg_PRECOMPILED_HEADERS)
    target_precompile_headers(${target} REUSE_FROM ${arg_PRECOMPILED_HEADERS})
  endif()
endmacro()

# doctest's main(), compiled once for every unit-test program of every tree (it is the slow part to compile).
function(_kqlab_doctest_main)
  if(NOT TARGET kqlab_doctest_main)
    file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/kqlab_doctest_main.cpp
         CONTENT "#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN\n#include <doctest/doctest.h>\n")
    add_library(kqlab_doctest_main STATIC ${CMAKE_BINARY_DIR}/kqlab_doctest_main.cpp)
    target_include_directories(kqlab_doctest_main PUBLIC ${DOCTEST_INCLUDE_DIR})
  endif()
endfunction()
