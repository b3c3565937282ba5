#include "cp2/train/signals.h"

#include <unistd.h>

#include <csignal>
#include <iterator>

namespace cp2::train {

namespace {

volatile std::sig_atomic_t g_signal = 0;
struct sigaction g_old[std::size(stop_signals)];

void on_signal(int sig) {
  if (g_signal) _exit(128 + sig);  // second signal: the user means now
  g_signal = sig;
  const char msg[] = "\ncp2: signal received: finishing this step and writing a checkpoint (again to exit now)\n";
  ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)n;
}

}  // namespace

StopSignals::StopSignals() {
  g_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < std::size(stop_signals); ++i) sigaction(stop_signals[i], &sa, &g_old[i]);
}

StopSignals::~StopSignals() {
  for (size_t i = 0; i < std::size(stop_signals); ++i) sigaction(stop_signals[i], &g_old[i], nullptr);
}

int StopSignals::received() { return g_signal; }
void StopSignals::reset() { g_signal = 0; }

}  // namespace cp2::train
