"""The scratch postmaster's restore_command: ask the restoring engine for one WAL file and wait for it.

Run by the scratch postmaster (as its OS user) with only Python's standard library (``python -I -S``)::

    walget.py <exchange folder> %f %p

It asks by creating ``<exchange>/asked/<file>``; the engine fetches the file from the archive, checks it
against its signed entry and puts it at ``<exchange>/ready/<file>`` (or ``<file>.none`` when the archive has no
such file). The file is then moved to ``%p``. Exit 0 when served, 1 when the archive has no such file (the
postmaster then ends recovery at what it has), 200 when the engine stopped serving or did not answer in time
(a fatal error for the postmaster, never taken as the end of the WAL).
"""

import contextlib
import os
import sys
import time

WAIT_SECONDS = 3600
# Above 125: PostgreSQL stops recovery with an error instead of taking the file as missing (the end of the WAL).
FATAL = 200


def main(argv):
    exchange, name, dest = argv[1], argv[2], argv[3]
    if "/" in name or name.startswith("."):
        return 1
    asked = os.path.join(exchange, "asked", name)
    ready = os.path.join(exchange, "ready", name)
    none = ready + ".none"
    fd = os.open(asked, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if os.path.exists(ready):
            os.replace(ready, dest)
            return 0
        if os.path.exists(none):
            with contextlib.suppress(OSError):
                os.unlink(none)
            return 1  # not in the archive: the end of what recovery can replay
        if os.path.exists(os.path.join(exchange, "closed")):
            return FATAL
        time.sleep(0.02)
    return FATAL


if __name__ == "__main__":
    sys.exit(main(sys.argv))
