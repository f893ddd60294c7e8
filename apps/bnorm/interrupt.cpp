#include "interrupt.hpp"

#include <unistd.h>

#include <csignal>
#include <cstdio>

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
  std::fprintf(stderr, "%s: interrupted (%s) at step %lld of %lld; %s\n", command.c_str(),
               signal_name(e.signal()).c_str(), static_cast<long long>(e.steps_done()),
               static_cast<long long>(total_steps), what.c_str());
}

}  // namespace bnorm::cli
