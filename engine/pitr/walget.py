"""The scratch postmaster's restore_command: ask the restoring engine for one WAL file and wait for it.

Run by the scratch postmaster (as its OS user) with only Python's standard library (``python -I -S``)::

    walget.py <exchange folder> %f %p

It asks by creating ``<exchange>/asked/<file>``; the engine fetches the file from the archive, checks it
against its signed entry and puts it at ``<exchange>/ready/<file>`` (or ``<file>.none`` when the archive has no
such file). The file is then moved to ``%p``. Exit 0 when served, 1 otherwise (the postmaster then ends
recovery at what it has).
"""

import contextlib
import os
import sys
import time

WAIT_SECONDS = 900


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
        if os.path.exists(none) or os.path.exists(os.path.join(exchange, "closed")):
            with contextlib.suppress(OSError):
                os.unlink(none)
            return 1
        time.sleep(0.02)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
