"""Reach the Hugging Face hub when the network allows; otherwise fail at once instead of after minutes of retries.

Users with a network load hub ids as usual. Without one, huggingface_hub would retry every file for about a
minute before giving up; probing the endpoint once and switching the libraries to their offline mode makes a
missing model or dataset a one-line error within seconds, while anything already in the local cache still loads.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from urllib.parse import urlparse

from huggingface_hub import constants


@lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextmanager
def hub_access() -> Iterator[bool]:
    """Yields whether the hub is reachable; while it is not, huggingface_hub and datasets run offline."""
    if hub_reachable():
        yield True
        return
    import datasets.config  # datasets takes seconds to import; only runs that reach for the hub pay it

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield False
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def unreachable_note(online: bool) -> str:
    return "" if online else "the hub is unreachable and it is not in the local cache; "
