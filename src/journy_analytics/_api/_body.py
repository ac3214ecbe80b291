"""Request bodies of the REST API, checked before anything is sent.

Every check raises ``ValidationError`` naming the argument, so a bad call never costs a
request (nor a slot of the rate limit). The shapes are the document's; where its schema
is looser than its text (the 100 users of a membership call) the text wins.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional

from journy_analytics._exceptions import ValidationError
from journy_analytics._message import checked_id, format_timestamp

__all__ = [
    "MAX_USERS_PER_CALL",
    "account_identification",
    "domain_name",
    "event_name",
    "format_timestamp",
    "membership_users",
    "metadata_map",
    "non_empty",
    "property_map",
    "user_identification",
]

# "You can add up to 100 users per call" (text of /accounts/users/add and /remove; the
# schema has no maxItems): longer lists are split into calls of this size.
MAX_USERS_PER_CALL = 100

# A bare host name: letters, digits, hyphens, dots, at least one dot, no scheme or path.
_DOMAIN = re.compile(r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}\Z")


def _email(value: Any, field: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or "@" not in value.strip(" @") or " " in value.strip():
        raise ValidationError(f"{field}={value!r} is not an email address (name@example.com)")
    return value.strip()


def domain_name(value: Any, field: str = "domain") -> str:
    if not isinstance(value, str):
        raise ValidationError(
            f"{field} must be a str like 'acme-inc.com', not {type(value).__name__}"
        )
    text = value.strip().lower().rstrip(".")
    if not _DOMAIN.match(text):
        raise ValidationError(
            f"{field}={value!r} is not a domain; pass the bare domain, e.g. 'acme-inc.com' "
            "(no scheme, path or port)"
        )
    return text


def user_identification(user_id: Any, email: Any, field: str = "") -> Dict[str, str]:
    """``{"userId": ..., "email": ...}``; at least one (the document's ``minProperties: 1``)."""
    prefix = f"{field}." if field else ""
    ident: Dict[str, str] = {}
    uid = checked_id(user_id, f"{prefix}user_id")
    if uid is not None:
        ident["userId"] = uid
    mail = _email(email, f"{prefix}email")
    if mail is not None:
        ident["email"] = mail
    if not ident:
        raise ValidationError(f"{field or 'the call'} needs user_id, email or both")
    return ident


def account_identification(account_id: Any, domain: Any, field: str = "") -> Dict[str, str]:
    """``{"accountId": ..., "domain": ...}``; at least one."""
    prefix = f"{field}." if field else ""
    ident: Dict[str, str] = {}
    aid = checked_id(account_id, f"{prefix}account_id")
    if aid is not None:
        ident["accountId"] = aid
    if domain is not None:
        ident["domain"] = domain_name(domain, f"{prefix}domain")
    if not ident:
        raise ValidationError(f"{field or 'the call'} needs account_id, domain or both")
    return ident


def membership_users(users: Any, field: str = "users") -> List[Dict[str, Any]]:
    """``[{"user_id": ...} | {"email": ...} | both]`` as the document's
    ``[{"identification": {...}}]``. A bare str is refused: is it an id or an email?"""
    if isinstance(users, (str, bytes, Mapping)) or not isinstance(users, Iterable):
        raise ValidationError(
            f"{field} must be a list of {{'user_id': ...}} and/or {{'email': ...}} dicts"
        )
    items: List[Dict[str, Any]] = []
    for i, user in enumerate(users):
        where = f"{field}[{i}]"
        if not isinstance(user, Mapping):
            raise ValidationError(
                f"{where} must be a dict like {{'user_id': 'u1'}} or {{'email': 'a@b.c'}}, "
                f"not {type(user).__name__}"
            )
        unknown = set(user) - {"user_id", "email"}
        if unknown:
            raise ValidationError(
                f"{where} has {sorted(unknown)!r}; a member is given by 'user_id' and/or 'email'"
            )
        ident = user_identification(user.get("user_id"), user.get("email"), where)
        items.append({"identification": ident})
    if not items:
        raise ValidationError(f"{field} is empty; pass at least one user")
    return items


def _scalar(value: Any, field: str) -> Any:
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{field}={value!r}: JSON has no NaN or infinity")
        return value
    if isinstance(value, (_dt.datetime, _dt.date)):
        return format_timestamp(value, field)
    return _NOT_SCALAR


_NOT_SCALAR: Any = object()


def _key(key: Any, field: str) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ValidationError(f"{field} has a key {key!r}; keys must be non-empty str")
    return key


def property_map(properties: Any, field: str = "properties") -> Optional[Dict[str, Any]]:
    """Values: str, bool, number, datetime/date (sent ISO 8601), a list of non-empty str,
    or None (deletes the property)."""
    if properties is None:
        return None
    if not isinstance(properties, Mapping):
        raise ValidationError(f"{field} must be a dict, not {type(properties).__name__}")
    out: Dict[str, Any] = {}
    for key, value in properties.items():
        name = f"{field}[{_key(key, field)!r}]"
        if value is None:
            out[key] = None
            continue
        leaf = _scalar(value, name)
        if leaf is not _NOT_SCALAR:
            out[key] = leaf
            continue
        if isinstance(value, (list, tuple, set, frozenset)):
            texts = list(value)
            if not all(isinstance(t, str) and t for t in texts):
                raise ValidationError(f"{name} must be a list of non-empty str")
            out[key] = sorted(texts) if isinstance(value, (set, frozenset)) else texts
            continue
        raise ValidationError(
            f"{name} is a {type(value).__name__}; a property is a str, bool, number, "
            "datetime, list of str, or None (to delete it)"
        )
    return out


def metadata_map(metadata: Any, field: str = "metadata") -> Optional[Dict[str, Any]]:
    """``/track`` metadata: str, bool, number or datetime (sent ISO 8601); no lists, no None."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise ValidationError(f"{field} must be a dict, not {type(metadata).__name__}")
    out: Dict[str, Any] = {}
    for key, value in metadata.items():
        name = f"{field}[{_key(key, field)!r}]"
        leaf = _scalar(value, name)
        if leaf is _NOT_SCALAR:
            raise ValidationError(
                f"{name} is a {type(value).__name__}; metadata values are str, bool, "
                "number or datetime"
            )
        out[key] = leaf
    return out


def event_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("event must be a non-empty str, e.g. event='signed_up'")
    return value


def non_empty(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{field} must be a non-empty str")
    return value
