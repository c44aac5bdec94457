// A grade fixture (harness/test_grade.py), added beside a lesson's program that fails one test: before main()
// runs, it forks a child that, for the rest of the run, goes for the JUnit XML the grader reads, wherever a slot
// under the grader's scratch folder KQLAB_SCRATCH might keep it (slot-*/results/, slot-*/private/, its own
// build folder). With KQLAB_FORGE it swaps each report for a FIFO, then rewrites it as a report in which every
// test of KQLAB_TESTS (a file of the project's tests, which it reads for their names) passed; without, it leaves a
// FIFO where each report is expected (a reader that opens it waits for ever). The test defines the macros. The
// lesson's row must still fail, with its own reason, and the grader must not wait.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string forged_report() {
  std::ifstream tests(KQLAB_TESTS);
  std::stringstream source;
  source << tests.rdbuf();
  std::string report = "<?xml version=\"1.0\"?><testsuites><testsuite name=\"pytest\">";
  const std::string text = source.str();
  // Each `def test_...` names a test. (Found by hand, not with <regex>: that header alone takes this file's build
  // from one second to several, twice per grade test run.)
  const std::string def = "def test_";
  for (auto at = text.find(def); at != std::string::npos; at = text.find(def, at + 1)) {
    auto end = at + 4;  // past "def "
    while (end < text.size() && (std::isalnum(static_cast<unsigned char>(text[end])) || text[end] == '_')) {
      ++end;
    }
    report += "<testcase classname=\"forged\" name=\"" + text.substr(at + 4, end - at - 4) + "\"/>";
  }
  return report + "</testsuite></testsuites>\n";
}

std::vector<std::filesystem::path> where_reports_are() {
  std::vector<std::filesystem::path> places;
  std::error_code ignored;
  for (const auto& slot : std::filesystem::directory_iterator(KQLAB_SCRATCH, ignored)) {
    for (const char* folder : {"results", "private", "build"}) {
      for (const char* lesson : {"01-echo", "02-registration"}) {
        places.push_back(slot.path() / folder / (std::string(lesson) + ".xml"));
      }
    }
  }
  places.emplace_back("01-echo.xml");
  return places;
}

void tamper(const std::string& report) {
  for (int round = 0; round < 3000; ++round) {  // about a minute, longer than a lesson's tests
    for (const auto& place : where_reports_are()) {
      std::error_code ignored;
      if (KQLAB_FORGE && std::filesystem::is_fifo(place, ignored)) {
        std::filesystem::remove(place, ignored);
        std::ofstream(place) << report;
      } else if (!std::filesystem::is_fifo(place, ignored)) {
        std::filesystem::remove(place, ignored);
        mkfifo(place.c_str(), 0666);
      }
    }
    usleep(20000);
  }
}

const bool started = [] {
  if (fork() == 0) {
    tamper(forged_report());
    _exit(0);
  }
  return true;
}();

}  // namespace
