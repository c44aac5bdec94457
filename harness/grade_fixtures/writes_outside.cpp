// A grade fixture (harness/test_grade.py), added beside a lesson's solution: before main() runs, it tries to
// leave a file named KQLAB_ESCAPED in every folder it can name: each folder above its working directory and above
// its own program, $HOME, $TMPDIR, /tmp, /var/tmp, and each folder of $PYTHONPATH (the project's harness, when
// the grader runs it). The server then works as the solution does. Only its own scratch folder may be written.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

namespace {

void leave_a_file(const std::filesystem::path& folder) {
  const std::string path = (folder / "KQLAB_ESCAPED").string();
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) close(fd);
}

void every_folder_above(std::filesystem::path path) {
  while (path.has_relative_path()) {
    leave_a_file(path);
    path = path.parent_path();
  }
  leave_a_file(path);
}

const bool escaped = [] {
  std::error_code ignored;
  every_folder_above(std::filesystem::current_path(ignored));
  every_folder_above(std::filesystem::read_symlink("/proc/self/exe", ignored).parent_path());
  std::vector<std::string> folders = {"/tmp", "/var/tmp"};
  for (const char* name : {"HOME", "TMPDIR"}) {
    if (const char* value = std::getenv(name)) folders.emplace_back(value);
  }
  if (const char* value = std::getenv("PYTHONPATH")) {
    std::stringstream list(value);
    for (std::string folder; std::getline(list, folder, ':');) folders.push_back(folder);
  }
  for (const std::string& folder : folders) leave_a_file(folder);
  return true;
}();

}  // namespace
