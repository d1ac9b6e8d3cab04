"""Run one server so that none of its processes outlives it: ``python -m inferbook.reaper SPEC.json``.

supervisord restarts a server that dies, and stops a server's whole process group; what it does not do is
clean up after a server that dies on its own. vLLM's API server starts an engine process and workers; when
the API server is killed they are reparented and live on, holding gigabytes, in no group anyone stops.

This wrapper is what supervisord runs. It marks itself a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``),
so orphaned descendants are reparented to it rather than to init; it runs the server as its child, in its own
process group; and when the server exits, for any reason, it stops every descendant left (SIGTERM, then
SIGKILL) before exiting with the server's status, so supervisord's restart starts from a clean slate.

The spec file (written 0600 by :class:`inferbook.supervise.Supervisor`) holds the command line, environment
and working folder; keeping the environment there keeps secrets off supervisord's config and ``ps``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

PR_SET_CHILD_SUBREAPER = 36
#: How long descendants get to exit on SIGTERM before SIGKILL.
GRACE_SECONDS = 10


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux only); False where the call is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_descendants(grace: float = GRACE_SECONDS) -> list[int]:
    """Stop every process below this one: SIGTERM, then SIGKILL after ``grace`` seconds. Returns their pids."""
    try:
        left = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    for proc in left:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return [proc.pid for proc in left]


def run(spec: dict[str, Any]) -> int:
    """Run the spec's command to its end, then clear its descendants; the command's exit status."""
    become_subreaper()
    child = subprocess.Popen(spec["argv"], env=spec["env"], cwd=spec.get("cwd") or None,
                             stdin=subprocess.DEVNULL, start_new_session=True)

    def forward(signum: int, _frame: Any) -> None:
        # supervisord signals our process group; the server has its own group, so pass the signal on to it
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    code = child.wait()
    orphans = reap_descendants()
    if orphans:
        print(f"inferbook.reaper: the server exited ({code}); stopped {len(orphans)} process(es) it left: "
              f"{', '.join(map(str, orphans))}", file=sys.stderr, flush=True)
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m inferbook.reaper SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    return run(spec)


if __name__ == "__main__":
    sys.exit(main())
