#!/usr/bin/python3
"""Runs a command under a unit's system call filter, the way systemd applies it.

    under-filter.py --allow NAME,NAME,... --families AF_INET,AF_UNIX -- COMMAND ARGS...

--allow lists the system calls the unit's SystemCallFilter= allows, already expanded
from its @groups (`systemd-analyze syscall-filter` does that); every other call fails
with EPERM, as with SystemCallErrorNumber=EPERM. --families is the unit's
RestrictAddressFamilies=: socket() succeeds for those families only. Like systemd,
names this kernel or libseccomp does not know are skipped, and no_new_privs is set.
The filter goes through libseccomp (Debian: python3-seccomp), which systemd uses too.
"""

import argparse
import errno
import os
import socket
import sys

import seccomp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--allow", required=True)
    parser.add_argument("--families", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")

    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in args.allow.split(","):
        if name == "socket":
            continue
        try:
            f.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # unknown here: systemd skips it too
    for family in args.families.split(","):
        number = int(getattr(socket, family))
        f.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, number))
    f.load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
