"""The book's MCP server: a small repository's tools over streamable HTTP (FastMCP).

Standalone on purpose: it imports FastMCP and the standard library only, so the same file runs as a local process
(inferbook's environment) and in the cluster's pod (a python image with the pinned fastmcp), mounted from a ConfigMap.

Four tools over one folder, the workspace: ``list_files``, ``read_file``, ``write_patch`` (replace a file's whole
content: what a small model can write reliably) and ``run_tests`` (``python -m unittest``). A path that leaves the
workspace is refused, not followed (the agent loop's Workspace had the same rule as Python functions). Every call is
logged on stdout with the tool and its outcome; who made it is the gateway's to log, as only the gateway sees the key.

    python server.py --root /workspace --host 0.0.0.0 --port 8000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from starlette.requests import Request
from starlette.responses import JSONResponse

#: Characters of a test log returned: enough for the failure, not a context-filling log.
RESULT_LIMIT = 2000
#: The server's name: LiteLLM prefixes its tools with the name it registers the server under, not this one.
NAME = "inferbook-mcp"


class Workspace:
    """The tools' folder: every path is resolved inside it, and one that leaves it is an error."""

    def __init__(self, root: Path, test_timeout: float = 60) -> None:
        self.root = root.resolve()
        self.test_timeout = test_timeout

    def path(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if path != self.root and self.root not in path.parents:
            raise ToolError(f"path '{relative}' is outside the repository")
        return path

    def list_files(self) -> str:
        return "\n".join(sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                                if p.is_file() and "__pycache__" not in p.parts))

    def read_file(self, path: str) -> str:
        target = self.path(path)
        if not target.is_file():
            raise ToolError(f"no file '{path}'; list_files shows the files")
        return target.read_text(errors="replace")

    def write_patch(self, path: str, content: str) -> str:
        target = self.path(path)
        if target == self.root:
            raise ToolError("write_patch needs a file path, not the repository itself")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        return f"wrote {len(content)} characters to {path}"

    def run_tests(self) -> str:
        try:
            proc = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=self.root, capture_output=True,
                                  text=True, timeout=self.test_timeout)
        except subprocess.TimeoutExpired:
            raise ToolError(f"the tests did not finish within {self.test_timeout:.0f} s") from None
        return f"exit status {proc.returncode}\n{(proc.stdout + proc.stderr)[-RESULT_LIMIT:]}"


def build(root: Path, test_timeout: float = 60) -> FastMCP:
    """The server over ``root``: the four tools, each call logged, and ``/healthz`` for probes."""
    workspace = Workspace(root, test_timeout)
    server = FastMCP(NAME, instructions="Tools over one small Python repository: list, read, patch, test.")

    def logged(name: str, call, **args: str) -> str:
        started = time.perf_counter()
        try:
            result = call(**args)
        except ToolError as exc:
            print(f"tool {name} refused in {time.perf_counter() - started:.3f} s: {exc}", flush=True)
            raise
        print(f"tool {name} ok in {time.perf_counter() - started:.3f} s ({len(result)} characters)", flush=True)
        return result

    @server.tool
    def list_files() -> str:
        """List the files of the repository."""
        return logged("list_files", workspace.list_files)

    @server.tool
    def read_file(path: str) -> str:
        """Read a file of the repository."""
        return logged("read_file", workspace.read_file, path=path)

    @server.tool
    def write_patch(path: str, content: str) -> str:
        """Replace the whole content of a file of the repository (creating it if needed)."""
        return logged("write_patch", workspace.write_patch, path=path, content=content)

    @server.tool
    def run_tests() -> str:
        """Run the repository's tests (python -m unittest) and return the exit status and output."""
        return logged("run_tests", workspace.run_tests)

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "server": NAME, "root": str(workspace.root)})

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the workspace folder the tools work in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--test-timeout", type=float, default=60)
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    build(args.root, args.test_timeout).run(transport="http", host=args.host, port=args.port, path="/mcp",
                                            show_banner=False, stateless_http=True)


if __name__ == "__main__":
    main()
