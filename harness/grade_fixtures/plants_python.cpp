// A grade fixture (harness/test_grade.py), added beside a lesson's program: before main() runs, it leaves Python
// files that a later test run would import instead of the real ones (pytest.py, conftest.py, sitecustomize.py,
// usercustomize.py, vocabulary.py) in every folder it can name: its working folder, $HOME, $TMPDIR, /tmp, each
// folder above its own program, and the project's harness folders KQLAB_HARNESS (the test defines it). Each
// planted file, if it ever ran, would print KQLAB-PLANT-RAN, and, as pytest.py, end the run as a success. The
// grader's next test run (the submission's next lesson, or the next submission in the slot) must not load any.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

constexpr const char* PLANT = "import sys\nprint('KQLAB-PLANT-RAN', flush=True)\nsys.exit(0)\n";

void plant_in(const std::filesystem::path& folder) {
  for (const char* name : {"pytest.py", "conftest.py", "sitecustomize.py", "usercustomize.py", "vocabulary.py"}) {
    std::ofstream(folder / name) << PLANT;
  }
}

const bool planted = [] {
  std::error_code ignored;
  std::vector<std::filesystem::path> folders = {std::filesystem::current_path(ignored), "/tmp", KQLAB_HARNESS,
                                                std::filesystem::path(KQLAB_HARNESS) / "02-registration"};
  for (const char* name : {"HOME", "TMPDIR"}) {
    if (const char* value = std::getenv(name)) folders.emplace_back(value);
  }
  for (auto path = std::filesystem::read_symlink("/proc/self/exe", ignored); path.has_relative_path();
       path = path.parent_path()) {
    folders.push_back(path.parent_path());
  }
  for (const auto& folder : folders) plant_in(folder);
  return true;
}();

}  // namespace
