// A grade fixture (harness/test_grade.py), in place of a lesson's program: a server that tries to read what is
// not its own, and prints it where the grader shows it. It reads the teacher's file KQLAB_TEACHER_FILE, the
// sources of every slot under the grader's scratch folder KQLAB_SCRATCH (other students', graded at the same
// time), and /etc/shadow; it prints each one it could open on stderr, which a failing test quotes, then exits
// without listening. The test defines both macros. Nothing it prints may be anyone else's.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace {

void show(const std::filesystem::path& path) {
  std::ifstream file(path);
  if (!file) {
    std::fprintf(stderr, "could not read %s\n", path.c_str());
    return;
  }
  std::stringstream contents;
  contents << file.rdbuf();
  std::fprintf(stderr, "read %s: %.300s\n", path.c_str(), contents.str().c_str());
}

}  // namespace

int main() {
  show(KQLAB_TEACHER_FILE);
  show("/etc/shadow");
  std::error_code ignored;
  int shown = 0;
  for (const auto& slot : std::filesystem::directory_iterator(KQLAB_SCRATCH, ignored)) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(slot.path() / "workspace", ignored)) {
      if (entry.path().extension() == ".cpp" && ++shown < 20) show(entry.path());
    }
  }
  std::fprintf(stderr, "looked for other slots' sources under %s: %d found\n", KQLAB_SCRATCH, shown);
  return 3;
}
