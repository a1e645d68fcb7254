// SIGINT/SIGTERM as a request to stop. The CLI (tools/signals.h) turns the
// signals into a request; long loops (a race's remapper, injected delays)
// poll it and end early, so the results computed so far are still reported.
#pragma once

namespace sptelab::interrupt {

// The signal that asked the run to stop, or 0 if none did.
int requested();
// Asks the run to stop (the first request's signal is kept).
void request(int signal);

}  // namespace sptelab::interrupt
