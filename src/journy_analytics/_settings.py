"""Checks of constructor settings shared by ``Analytics`` and ``JournyAPI``.

Each raises ``ValueError`` naming the setting and what it must be (the command line's
twins, which raise ``argparse`` errors, are in ``_argtypes``).
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any, Optional, Set, Tuple

from journy_analytics._core import PROXY_FROM_ENV
from journy_analytics._logging import logger

__all__ = ["check_transport_settings", "positive_int", "positive_number", "warn_plain_http"]


def positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        need = "zero or more" if allow_zero else "at least 1"
        raise ValueError(f"{name}={value} is out of range: it must be {need}")


def positive_number(name: str, value: Any, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "zero or more" if allow_zero else "more than 0"
        raise ValueError(f"{name}={value} is out of range: it must be {need} seconds")


def check_transport_settings(http_client: Any, proxy: Any, ssl_context: Any) -> None:
    """``proxy=`` and ``ssl_context=`` configure the default transport, not the user's."""
    if http_client is not None and (proxy is not PROXY_FROM_ENV or ssl_context is not None):
        raise ValueError(
            "proxy= and ssl_context= configure the default transport; with http_client= "
            "configure them on your own transport instead"
        )


_warned: Set[Tuple[str, str]] = set()


def warn_plain_http(scheme: str, host: Optional[str], who: str, secret: str) -> None:
    """``secret`` would travel in clear off this machine: say so once per host and secret."""
    if scheme != "http" or not host or (secret, host) in _warned:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        _warned.add((secret, host))
        logger.warning(
            "%s %s uses plain http:// off this machine; the %s and your users' data travel "
            "unencrypted. Use https://.",
            who,
            host,
            secret,
        )
