"""The Python half of the `kqlab` command (the POSIX sh bootstrap at the repository's root is the other half).

    course    the lessons on disk, the student's workspace and progress
    tools     running CMake, CTest and pytest, and reading their results
    mutants   solutions with one classic mistake put back, to keep the tests honest
    student   ./kqlab, ./kqlab check, reset, hint
    suite     ./kqlab test
"""
