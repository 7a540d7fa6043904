"""Runs SecantusDB's Python server (`secantusd-py`) for one test fixture.

Usage: python secantus_launcher.py [secantusd-py options...]

The options go to SecantusDB unchanged. What this adds is what `standin.py
--exit-with-parent` gives the stand-in: the server exits when the process that
started it is gone, so a test binary killed mid-run (SIGKILL, a CI timeout)
leaves no server behind. The server runs in this very process, so the pid the
fixture holds is the database's own (`kill -9` of it is a database crash).
"""

import os
import sys
import threading
import time


def watch_parent(parent):
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            # The parent is gone: leave at once, as a crashed test binary's
            # server should; the data folder is the fixture's and is thrown away.
            os._exit(0)


def main():
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    from secantus.cli import main as secantus_main

    sys.argv[0] = "secantusd-py"
    return secantus_main()


if __name__ == "__main__":
    sys.exit(main())
