#include "interrupt.hpp"

#include <unistd.h>

#include <csignal>
#include <cstdio>

#include "bnorm/core/text.hpp"

namespace bnorm::cli {

namespace {

volatile std::sig_atomic_t g_signal = 0;

constexpr int kSignals[] = {SIGINT, SIGTERM};
struct sigaction g_previous[2];
bool g_installed[2] = {false, false};

extern "C" void record_signal(int signal) {
  g_signal = signal;
}

}  // namespace

InterruptGuard::InterruptGuard() {
  g_signal = 0;
  for (int i = 0; i < 2; ++i) {
    struct sigaction current {};
    if (sigaction(kSignals[i], nullptr, &current) != 0 || current.sa_handler == SIG_IGN) continue;
    struct sigaction action {};
    action.sa_handler = record_signal;
    sigemptyset(&action.sa_mask);
    // Restart interrupted reads and writes (the loop polls the flag); one-shot, so that a
    // second signal takes the default action.
    action.sa_flags = SA_RESTART | SA_RESETHAND;
    g_installed[i] = sigaction(kSignals[i], &action, &g_previous[i]) == 0;
  }
}

InterruptGuard::~InterruptGuard() {
  for (int i = 0; i < 2; ++i) {
    if (g_installed[i]) sigaction(kSignals[i], &g_previous[i], nullptr);
    g_installed[i] = false;
  }
}

int interrupt_signal() noexcept {
  return g_signal;
}

void throw_if_interrupted(std::int64_t steps_done) {
  if (const int signal = g_signal) throw Interrupted(signal, steps_done);
}

void end_by_signal(int signal) {
  std::fflush(stdout);
  std::fflush(stderr);
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  sigaction(signal, &action, nullptr);
  std::raise(signal);
}

std::string signal_name(int signal) {
  switch (signal) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "signal " + std::to_string(signal);
  }
}

void report_interruption(const std::string& command, const Interrupted& e, std::int64_t total_steps,
                         const std::string& what) {
  if (isatty(fileno(stdout))) std::printf("\n");  // end a progress line redrawn in place
  std::fflush(stdout);
  // `what` names files from the command line: escaped, so that the message stays one line.
  const std::string line = command + ": interrupted (" + signal_name(e.signal()) + ") at step " +
                           std::to_string(e.steps_done()) + " of " + std::to_string(total_steps) + "; " +
                           printable(what, 0) + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace bnorm::cli
