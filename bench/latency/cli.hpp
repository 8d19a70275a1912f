// The latency programs' command line: --name value pairs, handed to `set(name, value)`,
// which returns false for a name it does not know (then the program exits with status 2).
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>

namespace deleverage::bench {

template <class Set>
void parse_flags(int argc, char** argv, Set&& set) {
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", k.c_str());
      std::exit(2);
    }
    if (!set(k, std::string(argv[++i]))) {
      std::fprintf(stderr, "unknown argument %s\n", k.c_str());
      std::exit(2);
    }
  }
}

}  // namespace deleverage::bench
