#include "cp2/train/signals.h"

#include <unistd.h>

#include <csignal>

namespace cp2::train {

namespace {

volatile std::sig_atomic_t g_signal = 0;
struct sigaction g_old_int, g_old_term;

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
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

StopSignals::~StopSignals() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
}

int StopSignals::received() { return g_signal; }
void StopSignals::reset() { g_signal = 0; }

}  // namespace cp2::train
