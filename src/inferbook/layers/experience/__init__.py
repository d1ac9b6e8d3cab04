"""The developer experience: chat, fill-in-the-middle and a coding agent with a key and a URL (``50-experience``).

No manifests and no process of its own: it is the tenant's side of the gateway. :mod:`.session` is what an
IDE and an agent do through the `openai` client, :mod:`.agent_loop` the agent and its sample repository,
:mod:`.ide_config` Continue's configuration, :mod:`.aider` a third-party agent run headlessly.
"""

from __future__ import annotations

from ...layer import Layer
from .cli import commands
from .session import Completion, Session, agent_workspace, connect, figures, issue_keys, verify

__all__ = ["DECLARATION", "Completion", "Session", "agent_workspace", "connect", "figures", "issue_keys", "verify"]

DECLARATION = Layer(
    name="experience",
    summary="chat, fill-in-the-middle and a coding agent through virtual keys",
    commands=commands,
)
