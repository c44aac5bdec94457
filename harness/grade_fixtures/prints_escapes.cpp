// A grade fixture (harness/test_grade.py), in place of a lesson's program: a server that prints terminal escape
// sequences and the like where the grader shows them (its stderr, which failing tests quote), then exits without
// listening: clear the screen, set the window title and the clipboard (OSC 52), a C1 control sequence
// introducer, a carriage return that hides what came before, a right-to-left override that reverses what follows.
// None of them may reach the teacher's terminal, logs or reports as the control it is.
#include <cstdio>

int main() {
  std::fputs("\x1b[2J\x1b[H\x1b]0;kqlab pwned\x07\x1b]52;c;cm0gLXJmIH4K\x07\xc2\x9b" "31mall tests passed\r"
             "kqlab: \xe2\x80\xae" "dessap stset lla\n",
             stderr);
  std::fputs("\x1b[2J\x1b[H", stdout);
  return 3;
}
