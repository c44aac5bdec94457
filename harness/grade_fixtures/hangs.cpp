// A grade fixture (harness/test_grade.py): a server that hangs. It ignores its arguments, never says it listens
// and never exits, so every test waits out its own deadline and the lesson's tests as a whole outlast
// `./kqlab grade --timeout`: the grader must stop the run and say so.
#include <unistd.h>

int main() {
  for (;;) pause();
}
