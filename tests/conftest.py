"""Shared fixtures: the checkout, the CLI, one real run of the whole book per session.

The whole session runs under the egress guard (``tests/egress.py``): pytest and every
process it starts (the book's kernels, vLLM, LiteLLM, the Prisma engine, third-party
clients) see no network beyond loopback and no ``../shared``, and each attempt to
reach either is recorded. Any record fails the session, so a new run-time download
or a read of the design folder turns CI red.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from inferbook.paths import Layout

from . import egress

#: One log per user and machine, so a server that an earlier session started (and this one reuses) still
#: reports into it; each session reads only what was recorded after it began.
EGRESS_LOG = Path(tempfile.gettempdir()) / f"inferbook-egress-{os.getuid()}.jsonl"
EGRESS_START = egress.size(EGRESS_LOG)


def pytest_configure(config: pytest.Config) -> None:
    egress.install_here(EGRESS_LOG)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    registries = sorted({r["target"] for r in egress.records(EGRESS_LOG, allowed=True, since=EGRESS_START)})
    if registries:
        print(f"\nEGRESS: package registries reached (allowed): {', '.join(registries)}", file=sys.stderr)
    found = egress.records(EGRESS_LOG, since=EGRESS_START)
    if found:
        print(f"\nEGRESS: {len(found)} attempt(s) to reach the network or ../shared were refused (log {EGRESS_LOG}):\n"
              + egress.report(found), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("inferbook")


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 900) -> CliResult:
    """Run the installed ``inferbook`` console script, as a user would."""
    proc = subprocess.run([str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """The real checkout, with generated overlays in a temporary build folder (not the checkout's _build)."""
    return Layout(root=ROOT, build_dir=tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="session")
def crd_store(layout: Layout):
    """One CRD store for the session, so the 2 MB KServe CRD is parsed once."""
    from inferbook.crds import CrdStore

    return CrdStore(layout)


@dataclass
class BuiltBook:
    layout: Layout
    result: CliResult

    @property
    def html(self) -> Path:
        return self.layout.html_dir("local")

    @property
    def run_dir(self) -> Path:
        return self.layout.run_dir("local")


@pytest.fixture(scope="session")
def built_book(tmp_path_factory: pytest.TempPathFactory, local_serving, local_routing, local_gateway,
               local_prometheus):
    """`inferbook run --profile local` once per session, into a temporary build folder.

    It depends on the session's local layers so that the book reuses them instead of starting its own. The layers
    the book starts beyond those (the MCP server, Presidio) are stopped at the end if they were not running before,
    so the session leaves no process behind.
    """
    from inferbook import load_profile
    from inferbook.layers import LAYERS

    profile = load_profile("local")
    owned = {"serving", "routing", "llm-gateway", "observability"}  # the session fixtures' layers
    others = [layer.local(profile, local_serving.layout, say=lambda m: print(m, file=sys.stderr))
              for layer in LAYERS if layer.local is not None and layer.name not in owned
              and layer.name in profile.features]
    already = {id(other) for other in others if other.running()}
    build = tmp_path_factory.mktemp("build")
    try:
        # a guard against a hung run, not a timing check: the whole book took about 17 minutes on two shared cores
        # with the benchmarks chapter's full set; its quick set (local's benchmarks.book) takes some 5 fewer
        result = run_cli("run", "--profile", "local", "--build-dir", str(build), timeout=2700)
        assert result.returncode == 0, f"the book run failed:\n{result.stderr[-4000:]}"
        yield BuiltBook(Layout(root=ROOT, build_dir=build), result)
    finally:
        for other in others:
            if id(other) not in already:
                other.stop()


def make_book(root: Path, notebooks: dict[str, list[str]]) -> Path:
    """A minimal project (toc, the shipped local profile, one page) whose chapters run the given code cells."""
    (root / "profiles").mkdir(parents=True)
    shutil.copy(ROOT / "profiles" / "local.yaml", root / "profiles" / "local.yaml")
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Test book\n")
    (root / "notebooks").mkdir()
    chapters = []
    for stem, cells in notebooks.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {stem}"),
                    nbformat.v4.new_code_cell('profile_name = "local"\noverrides = {}\nrun_dir = ""',
                                              metadata={"tags": ["parameters"]})]
        nb.cells += [nbformat.v4.new_code_cell(src) for src in cells]
        nbformat.write(nb, root / "notebooks" / f"{stem}.ipynb")
        chapters.append({"file": f"notebooks/{stem}"})
    toc = {"format": "jb-book", "root": "book/intro", "parts": [{"caption": "Layers", "chapters": chapters}]}
    import yaml

    (root / "_toc.yml").write_text(yaml.safe_dump(toc))
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    return root


def _reusable(layer) -> bool:
    """A healthy server is reused only if it runs under the egress guard; one started outside it is restarted."""
    if not layer.healthy():
        return False
    if egress.guarded(layer.process.pid(), EGRESS_LOG):
        return True
    print(f"{layer.layer}: restarting the running server under the egress guard", file=sys.stderr)
    layer.stop()
    return False


@pytest.fixture(scope="session")
def local_serving(tmp_path_factory: pytest.TempPathFactory):
    """The local profile's vLLM, started once per session (or reused) and stopped at the end if we started it."""
    from inferbook import load_profile
    from inferbook.layers.serving import LocalServing

    build = tmp_path_factory.mktemp("serving-build")
    serving = LocalServing(load_profile("local"), Layout(root=ROOT, build_dir=build),
                           say=lambda m: print(m, file=sys.stderr))
    was_running = _reusable(serving)
    serving.start()
    yield serving
    if not was_running:
        serving.stop()


@pytest.fixture(scope="session")
def local_routing(local_serving):
    """The local profile's routing layer (its front, vllm-router, replica b and the canary), started once per
    session (or reused) and stopped if we started it; None when the shipped profile leaves routing off. The
    gateway's aliases point at its front, so the gateway fixture starts it first."""
    from inferbook import load_profile
    from inferbook.layers.routing import LocalRouting

    profile = load_profile("local")
    if "routing" not in profile.features:
        yield None
        return
    routing = LocalRouting(profile, local_serving.layout, say=lambda m: print(m, file=sys.stderr))
    was_running = routing.healthy()
    pythons = [r.process for r in routing.replicas] + [routing.front]  # the Python ones the egress guard hooks
    if was_running and not all(egress.guarded(p.pid(), EGRESS_LOG) for p in pythons):
        print("routing: restarting the running layer under the egress guard", file=sys.stderr)
        routing.stop()
        was_running = False
    routing.start()
    yield routing
    if not was_running:
        routing.stop()


@pytest.fixture(scope="session")
def local_gateway(local_serving, local_routing):
    """The local profile's LiteLLM proxy and Postgres, started once per session (or reused),
    stopped if we started them. With routing on, its aliases go through the routing fixture's front."""
    from inferbook import load_profile
    from inferbook.layers.llm_gateway import LocalGateway

    gateway = LocalGateway(load_profile("local"), local_serving.layout, say=lambda m: print(m, file=sys.stderr))
    was_running = _reusable(gateway)
    gateway.start()
    yield gateway
    if not was_running:
        gateway.stop()


@pytest.fixture(scope="session")
def local_prometheus(local_serving):
    """The local profile's Prometheus, which the book's observability chapter starts (or reuses): stopped at the
    end of the session if it was not running before. Prometheus is a Go program, beyond the egress guard's
    hooks (Python and Node); its config scrapes loopback only."""
    from inferbook import load_profile
    from inferbook.layers.observability import LocalPrometheus

    prometheus = LocalPrometheus(load_profile("local"), local_serving.layout, say=lambda m: print(m, file=sys.stderr))
    was_running = prometheus.healthy()
    yield prometheus
    if not was_running:
        prometheus.stop()


def free_port() -> int:
    """A loopback port nothing listens on now (the OS's pick): for a server a test starts on its own."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
