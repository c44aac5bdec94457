// Factoring by trial division: see factor.hpp.
#include "factor.hpp"

#include <charconv>
#include <cstdint>
#include <string>

namespace {

// How many divisions between two looks at the cancellation flag: rare enough to cost nothing, often enough that
// a cancelled request stops within a millisecond or so.
constexpr std::uint64_t kDivisionsPerLook = 1 << 20;

// Appends " p" to `answer` for each time `divisor` divides `n`, dividing it out.
void divide_out(std::uint64_t& n, std::uint64_t divisor, std::string& answer) {
  while (n % divisor == 0) {
    answer += ' ';
    answer += std::to_string(divisor);
    n /= divisor;
  }
}

}  // namespace

std::string factor_request(std::string_view line, const std::atomic<bool>& cancelled) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // a client that ends its lines with \r\n
  std::uint64_t n = 0;
  const auto [end, error] = std::from_chars(line.data(), line.data() + line.size(), n);
  if (line.empty() || error != std::errc() || end != line.data() + line.size() || n < 2) {
    return "error: '" + std::string(line.substr(0, 40)) +
           "' is not a whole number from 2 to 18446744073709551615\n";
  }
  std::string answer = std::to_string(n) + ":";
  divide_out(n, 2, answer);
  std::uint64_t divisions = 0;
  // `divisor <= n / divisor` rather than `divisor * divisor <= n`, which would overflow for the largest n.
  for (std::uint64_t divisor = 3; divisor <= n / divisor; divisor += 2) {
    divide_out(n, divisor, answer);
    if (++divisions % kDivisionsPerLook == 0 && cancelled.load(std::memory_order_relaxed)) return "";
  }
  if (n > 1) {
    answer += ' ';
    answer += std::to_string(n);
  }
  answer += '\n';
  return answer;
}
