// A grade fixture (harness/test_grade.py), added beside a lesson's solution: a file that does not compile, so
// the lesson's build fails and its row must say so, with the compiler's first error.
int half_written(int value) {
  return value +
}
