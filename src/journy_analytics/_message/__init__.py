"""The message path: from an event method's arguments to the bytes that are queued.

In call order: ``scope`` (ids, account, properties and context from a contextvar),
``build`` (validate, build the wire dict: ids, timestamp, context), the plugin chain
(before, enrichment and destination plugins, only while one is registered), ``encode``
(orjson, once, in the caller's thread; the 32 KB limit). All of it runs in the caller's
thread; nothing here knows of queues or threads of delivery.

This front is all the rest of the package uses; the modules behind it are private to it.
"""

from __future__ import annotations

from journy_analytics._message._build import (
    LIBRARY,
    Timestamp,
    build_alias,
    build_group,
    build_identify,
    build_page,
    build_track,
    checked_id,
    format_timestamp,
    now_iso,
    reseed_message_ids,
)
from journy_analytics._message._chain import DESTINATION_QUEUE_SIZE, PLUGIN_TYPES, PluginChain
from journy_analytics._message._encoding import _FAST_OPTIONS as ENCODE_OPTIONS
from journy_analytics._message._encoding import (
    MAX_BATCH_BYTES,
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    SUPPORTED_KEY_TYPES,
    SUPPORTED_TYPES,
    DataclassInstance,
    compact,
    encode_event,
    to_jsonable,
    wire_form,
)
from journy_analytics._message._encoding import _default as encode_leaf
from journy_analytics._message._scope import (
    Scope,
    activate,
    activate_scope,
    active_scope,
    deactivate,
    scope,
)

__all__ = [
    "DESTINATION_QUEUE_SIZE",
    "ENCODE_OPTIONS",
    "LIBRARY",
    "MAX_BATCH_BYTES",
    "MAX_DEPTH",
    "MAX_EVENT_BYTES",
    "PLUGIN_TYPES",
    "SUPPORTED_KEY_TYPES",
    "SUPPORTED_TYPES",
    "DataclassInstance",
    "PluginChain",
    "Scope",
    "Timestamp",
    "activate",
    "activate_scope",
    "active_scope",
    "build_alias",
    "build_group",
    "build_identify",
    "build_page",
    "build_track",
    "checked_id",
    "compact",
    "deactivate",
    "encode_event",
    "encode_leaf",
    "format_timestamp",
    "now_iso",
    "reseed_message_ids",
    "scope",
    "to_jsonable",
    "wire_form",
]
