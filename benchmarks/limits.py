"""Process limits the benchmark processes share."""

from __future__ import annotations

import resource

#: Descriptors the largest runs need in one process: a proxy holding 20,000 connections has
#: two sockets for each.
WANTED_OPEN_FILES = 65536


def raise_open_files_limit(wanted: int = WANTED_OPEN_FILES) -> int:
    """Raise this process's RLIMIT_NOFILE to ``wanted`` where allowed (the hard limit too, as
    root), else the soft limit to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):  # not allowed to raise the hard limit
            pass
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft
