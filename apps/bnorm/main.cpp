// bnorm: the command line tool. The one place where exceptions become messages and exit
// statuses:
//   0  success (and --help)
//   1  the work failed: a missing or unreadable file, a file in the wrong format, a
//      numerical failure (bnorm::Error, std::exception)
//   2  the command line is wrong: unknown option, bad value, missing argument
//      (`bnorm` alone prints the overview and exits 0)
//      (CLI11 parse errors, UsageError)
// Every error is one line on stderr: "bnorm <command>: error: <what>".
#include <CLI/CLI.hpp>

#include <cctype>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "commands.hpp"

namespace {

int fail(const std::string& command, const std::string& message, int status) {
  std::string line = message;
  for (char& c : line) {
    if (c == '\n') c = ' ';
  }
  std::fprintf(stderr, "%s: error: %s\n", command.c_str(), line.c_str());
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "bnorm: batch normalization, Keras-compatible, in C++.\n"
      "Run `bnorm experiment` to see what batch normalization does (Ioffe & Szegedy 2015, Figure 1).",
      "bnorm"};
  app.footer("\nRun `bnorm COMMAND --help` for a command's options.");
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

  std::string command = "bnorm";
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
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
    return fail(command, e.argument() + ": expected " + e.expected() + ", received " + e.received(), 2);
  } catch (const bnorm::Error& e) {
    // The command is already named at the start of the line.
    if (e.where() == command)
      return fail(command, e.argument() + ": expected " + e.expected() + ", received " + e.received(), 1);
    return fail(command, e.what(), 1);
  } catch (const std::exception& e) {
    return fail(command, e.what(), 1);
  }
}
