"""Run one server so that none of its processes outlives it: ``python -m inferbook.reaper SPEC.json``.

supervisord restarts a server that dies, and stops a server's whole process group; what it does not do is
clean up after a server that dies on its own. vLLM's API server starts an engine process and workers; when
the API server is killed they are reparented and live on, holding gigabytes, in no group anyone stops.

This wrapper is what supervisord runs. It marks itself a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``),
so orphaned descendants are reparented to it rather than to init; it runs the server as its child, in its own
process group; and when the server exits, for any reason, it stops every descendant left (SIGTERM, then
SIGKILL) before exiting with the server's status, so supervisord's restart starts from a clean slate.

A reaper can itself be killed (``kill -9``, the OOM killer); then nothing clears the tree at once. So the
server is told to stop when its reaper dies (``PR_SET_PDEATHSIG``), every process of the tree carries the
program's tag in its environment (:data:`TAG`), and the next reaper of the program, which supervisord starts
within a second, first stops whatever still carries the tag: no engine outlives its supervision.

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
PR_SET_PDEATHSIG = 1
#: How long descendants get to exit on SIGTERM before SIGKILL.
GRACE_SECONDS = 10
#: The environment variable that tags every process of one supervised program with the program's spec path.
#: Every descendant inherits it (vLLM's engine and workers, PostgreSQL's backends), so a process the
#: program left behind is found by its tag even after the reaper that would have cleared it was killed.
TAG = "INFERBOOK_PROGRAM"


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux only); False where the call is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """In the server's child, before it runs: receive SIGTERM when the reaper dies (``kill -9`` of the reaper,
    the OOM killer), so the server does not go on serving, unsupervised, beside the one supervisord restarts."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def tagged(tag: str) -> list[psutil.Process]:
    """Every live process carrying ``tag`` in its environment (:data:`TAG`): one program's whole tree,
    wherever its members were reparented to."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def stop_all(procs: list[psutil.Process], grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM ``procs``, then SIGKILL those alive after ``grace`` seconds; returns their pids."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return [proc.pid for proc in procs]


def reap_descendants(grace: float = GRACE_SECONDS) -> list[int]:
    """Stop every process below this one: SIGTERM, then SIGKILL after ``grace`` seconds. Returns their pids."""
    try:
        left = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return stop_all(left, grace)


def run(spec: dict[str, Any], tag: str = "") -> int:
    """Run the spec's command to its end, then clear its descendants; the command's exit status.

    With ``tag`` (the spec's path), processes an earlier run of the same program left (its reaper was
    killed, so nothing cleared them) are stopped first, and the server and all it starts carry the tag.
    """
    become_subreaper()
    env = dict(spec["env"])
    if tag:
        left = stop_all(tagged(tag))
        if left:
            print(f"inferbook.reaper: stopped {len(left)} process(es) an earlier run of this program left: "
                  f"{', '.join(map(str, left))}", file=sys.stderr, flush=True)
        env[TAG] = tag
    child = subprocess.Popen(spec["argv"], env=env, cwd=spec.get("cwd") or None,
                             stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)

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
    path = Path(args[0])
    return run(json.loads(path.read_text()), tag=str(path.resolve()))


if __name__ == "__main__":
    sys.exit(main())
