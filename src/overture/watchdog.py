"""The watchdog process: `python -S -m overture.watchdog RUN_ID`.

It blocks reading its stdin, a pipe whose other end only Overture holds. A
line `done` means Overture stopped cleanly. End of file without it means
Overture died: every process of the run is stopped.
"""

from __future__ import annotations

import signal
import sys

from overture.guard import marked_processes, terminate


def main() -> None:
    run_id = sys.argv[1]
    # Ctrl-C in Overture's terminal is Overture's business, not ours.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.stdin.buffer.readline().strip() == b"done":
        return
    terminate(marked_processes(run_id), grace=3.0)


if __name__ == "__main__":
    main()
