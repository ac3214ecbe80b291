"""The resume point of an import, on disk.

Location (documented in docs/import.md): ``.journy-import/<key>.json`` under the directory
the command runs in (``--checkpoint-dir`` to change it). ``key`` is a hash of the import's
identity: each input's absolute path, size and modification time, the format, mapping and
default type, the endpoint and a hash of the write key (the key itself is never written).
The same command in the same place finds it; another place, a changed file or
``--restart`` starts over (and the content-derived message ids keep that idempotent).

``rows_done`` counts the rows, in input order, *below which every row is settled*:
delivered (the server acknowledged it), or refused for good and reported. Rows past it
were in flight or not read yet; a resumed run re-sends them, so at most what was in flight
at the crash is sent twice, and journy.io drops those by message id. The file is written
to a temporary name, fsynced and renamed over the old one, so a crash leaves the old or
the new checkpoint, never a torn one. ``totals`` keeps the counts of every run so far
(delivered, refused by code, the first examples), so a re-run reports them and exits as
the import did.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any, Dict, Optional

import orjson

__all__ = ["Checkpoint", "checkpoint_key"]

DIRNAME = ".journy-import"
_VERSION = 1


def checkpoint_key(identity: Dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]


class Checkpoint:
    def __init__(self, path: str, describe: Optional[Dict[str, Any]] = None) -> None:
        self.path = path
        self.describe = describe or {}

    @classmethod
    def in_directory(
        cls, directory: str, identity: Dict[str, Any], describe: Dict[str, Any]
    ) -> Checkpoint:
        path = os.path.join(os.path.abspath(directory), DIRNAME, checkpoint_key(identity) + ".json")
        return cls(path, describe)

    def load(self) -> Optional[Dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                state = orjson.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ValueError(
                f"checkpoint {self.path} is unreadable ({exc}); remove it or pass --restart"
            ) from None
        if not isinstance(state, dict) or state.get("version") != _VERSION:
            raise ValueError(
                f"checkpoint {self.path} is not one this version writes; remove it or "
                "pass --restart"
            )
        return state

    def save(self, rows_done: int, counts: Dict[str, Any], complete: bool = False) -> None:
        state = {
            "version": _VERSION,
            "rows_done": rows_done,
            "complete": complete,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **counts,
            "import": self.describe,
        }
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(state, option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def remove(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
