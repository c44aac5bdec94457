// The work both of the lesson's servers do for their clients: factoring whole numbers into primes.
//
// Trial division, slow on purpose: a 13-digit prime takes tens of milliseconds, an 18-digit one seconds. Work that
// keeps a CPU busy is what a pool of threads is for; a server whose requests only wait for the network is better
// served by one thread (lessons 01 to 10).
#pragma once

#include <atomic>
#include <string>
#include <string_view>

// The answer to one request, a line without its newline: "360: 2 2 2 3 3 5\n" for "360", or
// "error: ...\n" for anything that is not a whole number from 2 to 18446744073709551615. Gives up as soon as
// `cancelled` is true (it looks every million divisions) and then returns "": nobody will read the answer.
std::string factor_request(std::string_view line, const std::atomic<bool>& cancelled);
