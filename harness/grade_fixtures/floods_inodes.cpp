// A grade fixture (harness/test_grade.py), in place of a lesson's program: a server that creates empty files
// until it cannot (an inode flood: empty files take no space, so a size limit alone never stops them) in every
// folder it may write, at most KQLAB_FILES of them in each, then says on stderr how far it got and why it
// stopped, and exits without listening. The grader's caps must end it long before the machine's inodes are gone.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr int KQLAB_FILES = 200000;

void flood(const std::string& folder) {
  int made = 0;
  int error = 0;
  for (; made < KQLAB_FILES; ++made) {
    const std::string path = folder + "/flood-" + std::to_string(made);
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
      error = errno;
      break;
    }
    close(fd);
  }
  std::fprintf(stderr, "made %d files in %s, then: %s\n", made, folder.c_str(),
               error ? std::strerror(error) : "the fixture's own limit");
}

}  // namespace

int main() {
  const char* home = std::getenv("HOME");
  for (const std::string folder : {std::string("/tmp"), std::string("/dev/shm"), std::string(home ? home : ".")}) {
    flood(folder);
  }
  return 3;
}
