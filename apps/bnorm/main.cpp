// bnorm: the command line tool. The one place where exceptions become messages and exit
// statuses:
//   0  success (and --help, --version)
//   1  the work failed: a missing or unreadable file, a file in the wrong format, a
//      numerical failure (bnorm::Error, std::exception), or standard output that could
//      not be written (a full disk; a closed pipe ends bnorm by SIGPIPE, silently, as it
//      ends other Unix tools)
//   130, 143  train or experiment stopped by SIGINT or SIGTERM: one line, then the
//      process ends by that signal (a shell reports 128 + the signal number)
//   2  the command line is wrong: unknown command or option, bad value, missing argument
//      (`bnorm` alone prints the overview and exits 0)
//      (CLI11 parse errors, UsageError)
// Every error is one line on stderr in one style:
//   bnorm <command>: error: <what>: expected <...>, received <...>
// where <what> names the argument, and the file it gave ("INPUT x.npy: line 2"). Bytes
// that are not printable ASCII are escaped, so no message carries a terminal escape or
// is cut by a NUL.
#include <malloc.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/text.hpp"
#include "commands.hpp"
#include "interrupt.hpp"

#ifndef BNORM_VERSION
#error "BNORM_VERSION must be defined (apps/CMakeLists.txt passes the project's version)"
#endif

namespace {

// One line on stderr. The message is made safe here too, whatever built it (CLI11's
// messages quote the command line): a line break becomes a space, any other byte that is
// not printable ASCII \xHH. Backslashes stay, so text already escaped by printable() reads
// the same.
int fail(const std::string& command, const std::string& message, int status) {
  std::string line = command + ": error: ";
  for (const char c : message) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      line += ' ';
    } else if (u < 0x20 || u >= 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(u));
      line += buf;
    } else {
      line += c;
    }
  }
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
  return status;
}

// The first option after the subcommand's name that the subcommand does not know (CLI11
// reports a missing MODEL first, hiding the mistyped option that a user needs to see).
std::string unknown_option(const CLI::App& sub, int argc, char** argv) {
  bool after = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (!after) {
      after = a == sub.get_name();
      continue;
    }
    if (a == "--") break;
    if (a.size() < 2 || a[0] != '-' || (a[1] != '-' && (std::isdigit(static_cast<unsigned char>(a[1])) || a[1] == '.'))) continue;
    if (sub.get_option_no_throw(a.substr(0, a.find('='))) == nullptr) return a;
  }
  return "";
}

// Levenshtein distance, for "did you mean".
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// The first word of the command line that is not an option: the command. The top level
// has only flags (--help, --version), so no option takes it as a value.
std::string first_word(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") return i + 1 < argc ? argv[i + 1] : "";
    if (!a.empty() && a[0] != '-') return a;
  }
  return "";
}

// "unknown command 'tarin' (did you mean 'train'? commands: ...; see `bnorm --help`)".
std::string unknown_command_message(const std::string& word, const std::vector<std::string>& names) {
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  std::string closest;
  std::size_t best = 3;  // at most two edits away, or a prefix of a command
  for (const auto& n : names) {
    const std::size_t d = n.rfind(word, 0) == 0 && word.size() >= 2 ? 1 : edit_distance(word, n);
    if (d < best) {
      best = d;
      closest = n;
    }
  }
  std::string hint = closest.empty() ? "" : "did you mean '" + closest + "'? ";
  return "unknown command " + bnorm::printable_quoted(word) + " (" + hint + "commands: " + list + "; see `bnorm --help`)";
}

// Standard output, after the command wrote it: flushed, and a failed write (a full disk,
// a closed pipe) reported like any error, exit status 1. A command that failed already
// keeps its status and its one line.
int finish_output(const std::string& command, int status) {
  errno = 0;
  std::cout.flush();
  const bool stream_failed = !std::cout;
  int error = errno;
  if (std::fflush(stdout) != 0) error = errno;
  const bool failed = stream_failed || std::ferror(stdout);
  if (!failed || status != 0) return status;
  const std::string reason = error != 0 ? std::string(" (") + std::strerror(error) + ")" : "";
  return fail(command, "standard output: expected a writable stream, received a write error" + reason, 1);
}

int run(int argc, char** argv, std::string& command) {
  CLI::App app{
      "bnorm: batch normalization, Keras-compatible, in C++.\n"
      "Run `bnorm experiment` to see what batch normalization does (Ioffe & Szegedy 2015, Figure 1).",
      "bnorm"};
  app.footer("\nRun `bnorm COMMAND --help` for a command's options.");
  app.set_version_flag("--version", std::string("bnorm ") + BNORM_VERSION, "Print the version and exit");
  app.require_subcommand(0, 1);
  std::vector<std::pair<CLI::App*, bnorm::cli::Runner>> commands;
  const auto add = [&](bnorm::cli::Runner (*adder)(CLI::App&)) {
    const auto before = app.get_subcommands({}).size();
    bnorm::cli::Runner runner = adder(app);
    commands.emplace_back(app.get_subcommands({})[before], std::move(runner));
  };
  add(bnorm::cli::add_experiment_command);
  add(bnorm::cli::add_train_command);
  add(bnorm::cli::add_inspect_command);
  add(bnorm::cli::add_predict_command);
  add(bnorm::cli::add_evaluate_command);
  add(bnorm::cli::add_recalibrate_command);
  add(bnorm::cli::add_fold_command);

  std::vector<std::string> names;
  for (const auto& [sub, runner] : commands) names.push_back(sub->get_name());
  if (const std::string word = first_word(argc, argv); !word.empty()) {
    if (std::find(names.begin(), names.end(), word) == names.end()) {
      return fail(command, unknown_command_message(word, names), 2);
    }
    command = "bnorm " + word;  // also for `bnorm train --help`, whose output may fail
  }

  // --help and --version: CLI11's text, written with stdio like every other output, so
  // that a failed write is seen (with its errno) when finish_output flushes.
  const auto print = [&](const CLI::Error& e) {
    std::ostringstream out, err;
    const int status = app.exit(e, out, err);
    std::fwrite(out.str().data(), 1, out.str().size(), stdout);
    return status;
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return print(e);
  } catch (const CLI::CallForAllHelp& e) {
    return print(e);
  } catch (const CLI::CallForVersion& e) {
    return print(e);
  } catch (const CLI::ParseError& e) {
    for (auto& [sub, runner] : commands) {
      if (!sub->parsed()) continue;
      command = "bnorm " + sub->get_name();
      if (const std::string bad = unknown_option(*sub, argc, argv); !bad.empty()) {
        return fail(command, "unknown option " + bad + " (see `" + command + " --help`)", 2);
      }
    }
    return fail(command, std::string(e.what()) + " (see `" + command + " --help`)", 2);
  }

  const auto expected_received = [](const bnorm::Error& e) {
    return (e.argument().empty() ? "" : e.argument() + ": ") + "expected " + e.expected() + ", received " +
           e.received();
  };
  try {
    for (auto& [sub, runner] : commands) {
      if (!sub->parsed()) continue;
      command = "bnorm " + sub->get_name();
      return runner();
    }
    // No subcommand: the overview.
    std::printf("%s", app.help().c_str());
    return 0;
  } catch (const bnorm::cli::UsageError& e) {
    return fail(command, expected_received(e), 2);
  } catch (const bnorm::Error& e) {
    // The command is already named at the start of the line.
    if (e.where() == command) return fail(command, expected_received(e), 1);
    return fail(command, e.what(), 1);
  } catch (const std::exception& e) {
    return fail(command, e.what(), 1);
  }
}

}  // namespace

// The tensors of a CNN batch are tens of megabytes, above glibc's mmap threshold: each
// layer's output would be fresh pages from the kernel (page faults, zeroing) unmapped
// again when freed, about half of a MobileNetV2 batch's time (docs/benchmarks.md, CNN
// models). The tool keeps freed memory for the next layer instead, as TensorFlow's and
// PyTorch's caching allocators do (its resident size stays at its peak until it exits).
// BNORM_MALLOC_REUSE=0 keeps glibc's defaults. A process-wide setting: the tool's, not
// the library's (a program using the library chooses its own).
namespace {
void keep_freed_memory() {
  if (const char* v = std::getenv("BNORM_MALLOC_REUSE"); v != nullptr && std::strcmp(v, "0") == 0) return;
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
}
}  // namespace

int main(int argc, char** argv) {
  keep_freed_memory();
  std::string command = "bnorm";
  const int status = finish_output(command, run(argc, argv, command));
  // A command stopped by SIGINT or SIGTERM (train, experiment: interrupt.hpp) has cleaned
  // up and said so; it now ends by that signal, so that a shell script running it stops
  // too (a shell goes on after a child that merely exits with 130).
  if (const int signal = bnorm::cli::interrupt_signal(); signal != 0 && status == 128 + signal) {
    bnorm::cli::end_by_signal(signal);
  }
  return status;
}
