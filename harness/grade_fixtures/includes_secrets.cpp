// A grade fixture (harness/test_grade.py), in place of a lesson's program: a source that includes, at compile
// time, files by their absolute paths, so that the compiler's errors quote them: the teacher's file
// KQLAB_TEACHER_FILE, the sources in both slots, KQLAB_SLOT_0_SOURCE and KQLAB_SLOT_1_SOURCE (one of them a
// student graded at the same time), /etc/shadow.
// The test defines the macros. Whatever of them the compiler can see is included; if it sees none, the build
// stops with an error that says so. Either way it does not compile; its errors may quote only its own lines.
#if __has_include(KQLAB_TEACHER_FILE)
#include KQLAB_TEACHER_FILE
#define KQLAB_SAW_ONE
#endif
#if __has_include(KQLAB_SLOT_0_SOURCE)
#include KQLAB_SLOT_0_SOURCE
#define KQLAB_SAW_ONE
#endif
#if __has_include(KQLAB_SLOT_1_SOURCE)
#include KQLAB_SLOT_1_SOURCE
#define KQLAB_SAW_ONE
#endif
#if __has_include("/etc/shadow")
#include "/etc/shadow"
#define KQLAB_SAW_ONE
#endif
#ifndef KQLAB_SAW_ONE
#error "none of the files named by an absolute path was visible"
#endif
