"""The agent's settings, from its environment only (the node sets it at create time).

- ``VK_TRIO_LINK``: the link's credentials (``link.agent_credentials``), required;
- ``VK_TRIO_AGENT_PORT``: the link's port (default 10250, ``protocol.AGENT_PORT``);
- ``VK_TRIO_AGENT_DIR``: the agent's own state, logs and volumes (default ``/.vk-trio``);
- ``VK_TRIO_AGENT_ROOT``: where mount paths are made (default ``/``; tests use a temp dir).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vk_trio.agent.link import CREDENTIALS_ENV, LinkKeys, agent_keys
from vk_trio.agent.protocol import AGENT_PORT

__all__ = ["AgentSettings", "SettingsError", "settings_from_env"]


class SettingsError(Exception):
    """The environment cannot work; the message says what to fix, in one line."""


@dataclass(frozen=True)
class AgentSettings:
    keys: LinkKeys
    port: int = AGENT_PORT
    state_dir: Path = Path("/.vk-trio")
    root: Path = Path("/")
    host: str = "0.0.0.0"
    handshake_timeout: float = 10.0
    """A connection that has not completed the TLS handshake by then is dropped."""


def settings_from_env(env: Mapping[str, str]) -> AgentSettings:
    """Read the settings. Raises :class:`SettingsError`; never shows a value but the port."""
    credentials = env.get(CREDENTIALS_ENV, "")
    if not credentials:
        raise SettingsError(f"{CREDENTIALS_ENV} is not set: the node gives it to the instance")
    try:
        keys = agent_keys(credentials)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    port = env.get("VK_TRIO_AGENT_PORT", str(AGENT_PORT))
    if not port.isdigit() or int(port) >= 65536:
        raise SettingsError(f"VK_TRIO_AGENT_PORT is not a port number: {port!r}")
    return AgentSettings(
        keys=keys,
        port=int(port),
        state_dir=Path(env.get("VK_TRIO_AGENT_DIR") or "/.vk-trio"),
        root=Path(env.get("VK_TRIO_AGENT_ROOT") or "/"),
    )
