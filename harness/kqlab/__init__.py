"""The Python half of the `kqlab` command (the POSIX sh bootstrap at the repository's root is the other half).

    course    the lessons on disk, the student's workspace and progress
    tools     running CMake, CTest and pytest, and reading their results
    mutants   solutions with one classic mistake put back, to keep the tests honest
    ladders   each gap's hints, three rungs (the idea, the tools, the shape), and the check that rungs 1-2 hold
              no line of the answer
    student   ./kqlab, ./kqlab check, reset, hint
    suite     ./kqlab test
"""
