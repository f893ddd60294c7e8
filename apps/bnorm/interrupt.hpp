// apps/bnorm/interrupt.hpp: stopping `bnorm train` and `bnorm experiment` cleanly on
// Ctrl-C (SIGINT) or SIGTERM.
//
// While an InterruptGuard lives, SIGINT and SIGTERM only record which signal came (an
// async-signal-safe store to a sig_atomic_t); the training loops poll it once per step
// (throw_if_interrupted), unwind, remove what they had started to write, print one line,
// and main() then ends the process by the same signal (end_by_signal): a shell reports
// 128 + the signal number (130 for SIGINT, 143 for SIGTERM) and stops a script too. The handlers are one-shot (SA_RESETHAND): a
// second Ctrl-C kills the process at once. A signal ignored when bnorm started (a
// background job of a non-interactive shell, nohup) stays ignored.
#pragma once

#include <cstdint>
#include <exception>
#include <string>

namespace bnorm::cli {

// Installs the handlers; the destructor restores the previous ones. One at a time.
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
};

// The signal received since the guard was installed (SIGINT or SIGTERM), or 0.
int interrupt_signal() noexcept;

// Thrown by throw_if_interrupted: the signal, and the number of training steps done.
class Interrupted : public std::exception {
 public:
  Interrupted(int signal, std::int64_t steps_done) : signal_(signal), steps_done_(steps_done) {}
  const char* what() const noexcept override { return "interrupted"; }
  int signal() const noexcept { return signal_; }
  std::int64_t steps_done() const noexcept { return steps_done_; }
  int exit_status() const noexcept { return 128 + signal_; }

 private:
  int signal_;
  std::int64_t steps_done_;
};

// Throws Interrupted(signal, steps_done) when a signal was received.
void throw_if_interrupted(std::int64_t steps_done);

// Ends the process by `signal` with its default action (after stdout and stderr are
// flushed), as if the signal had not been caught: for main(), once an interrupted command
// has cleaned up and reported. Returns only if the signal does not end the process.
void end_by_signal(int signal);

// "SIGINT", "SIGTERM".
std::string signal_name(int signal);

// Prints "COMMAND: interrupted (SIGINT) at step S of N; WHAT" as one line on stderr
// (after ending a progress line that is being redrawn on a terminal).
void report_interruption(const std::string& command, const Interrupted& e, std::int64_t total_steps,
                         const std::string& what);

}  // namespace bnorm::cli
