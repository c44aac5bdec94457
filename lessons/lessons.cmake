# How a lesson program is built, shared by lessons/ (the exercises), solutions/, the student's workspace/ and the
# harness's mutants. Each tree mirrors the others: a directory NN-topic/ per lesson, holding one program's *.cpp.
include_guard(GLOBAL)

# kqlab_add_lesson_tree(<tree> <kind> [EXCLUDE_FROM_ALL] [WARNINGS_NOT_ERRORS])
#
# For each lesson directory <tree>/NN-topic/, builds the target <kind>_NN-topic from its *.cpp files into
# ${CMAKE_BINARY_DIR}/bin/<kind>/NN-topic: the program the harness runs with `--impl <kind>`.
#   EXCLUDE_FROM_ALL     built only when asked for by name (./kqlab check, the mutant tests), so a half-edited copy
#                        never breaks the project's build.
#   WARNINGS_NOT_ERRORS  warnings are shown but do not stop the build, even when KQLAB_WERROR is on: a student's
#                        unused variable is advice, not a failure.
function(kqlab_add_lesson_tree tree kind)
  cmake_parse_arguments(PARSE_ARGV 2 arg "EXCLUDE_FROM_ALL;WARNINGS_NOT_ERRORS" "" "")
  file(GLOB lesson_dirs LIST_DIRECTORIES true CONFIGURE_DEPENDS ${tree}/[0-9][0-9]-*)
  foreach(dir IN LISTS lesson_dirs)
    file(GLOB sources CONFIGURE_DEPENDS ${dir}/*.cpp)
    if(NOT IS_DIRECTORY ${dir} OR NOT sources)
      continue()
    endif()
    get_filename_component(lesson ${dir} NAME)
    set(target ${kind}_${lesson})
    add_executable(${target} ${sources})
    target_link_libraries(${target} PRIVATE kqlab_common)
    set_target_properties(${target} PROPERTIES
      OUTPUT_NAME ${lesson}
      RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin/${kind})
    if(arg_EXCLUDE_FROM_ALL)
      set_target_properties(${target} PROPERTIES EXCLUDE_FROM_ALL TRUE)
    endif()
    if(arg_WARNINGS_NOT_ERRORS)
      target_compile_options(${target} PRIVATE -Wno-error)
    endif()
  endforeach()
endfunction()
