"""Request scope: ids, account, properties and context that event calls inherit.

``scope(...)`` sets a ``contextvars.ContextVar`` holding an immutable ``Scope``; the event
methods of every client read it with one ``ContextVar.get()`` (``None`` outside any scope,
so unused scopes cost a single C call). Because it is a context variable it follows
asyncio tasks (each task runs in a copy of its creator's context) and
``contextvars.copy_context().run(...)`` across threads, and it does not leak between
concurrent requests.

Rules (the README's "Request scope" section says the same to users):

- ids: a call that passes neither ``user_id`` nor ``anonymous_id`` takes both from the
  scope. A call that names anyone takes neither: an explicit identity is about that
  person, and pairing it with the scope's other id would merge two people.
- ``group_id``: taken from the scope when the call gives none (``context.groupId`` for
  track/page/screen, the account of ``group()``).
- ``properties`` (track/page/screen) and ``context`` (every call) merge key by key; the
  call's keys win.
- nesting: an inner scope overrides what it sets and inherits what it leaves unset
  (properties and context merge key by key); leaving it restores the outer scope, also
  when the block raises.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from types import TracebackType
from typing import (
    Any,
    AsyncGenerator,
    Callable,
    Dict,
    Generator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    Type,
    TypeVar,
    cast,
)

from journy_analytics._exceptions import ValidationError
from journy_analytics._message._build import checked_id

__all__ = ["Scope", "activate", "activate_scope", "active_scope", "deactivate", "scope"]

F = TypeVar("F", bound=Callable[..., Any])

_EMPTY: Dict[str, Any] = {}


class Scope(NamedTuple):
    """The effective scope: what is set here and in every enclosing scope. Immutable (a
    tuple: cheap to build once per request); its dicts are private copies that nothing
    mutates (the message builders copy before changing a mapping)."""

    user_id: Optional[str] = None
    anonymous_id: Optional[str] = None
    group_id: Optional[str] = None
    properties: Dict[str, Any] = _EMPTY
    context: Dict[str, Any] = _EMPTY

    # -- filling a call ------------------------------------------------------------------

    def fill(
        self,
        user_id: Any,
        anonymous_id: Any,
        group_id: Any,
        properties: Optional[Mapping[str, Any]],
        context: Optional[Mapping[str, Any]],
    ) -> Tuple[Any, Any, Any, Optional[Mapping[str, Any]], Optional[Mapping[str, Any]]]:
        """The call's arguments with what the call left out taken from this scope."""
        if user_id is None and anonymous_id is None:
            user_id = self.user_id
            anonymous_id = self.anonymous_id
        if self.properties:
            properties = (
                self.properties if properties is None else {**self.properties, **properties}
            )
        if context is None:
            if self.context:
                context = self.context
        else:
            if group_id is None and "groupId" in context:
                # The call set its account through context: that is explicit too.
                group_id = context["groupId"]
            if self.context:
                context = {**self.context, **context}
        if group_id is None:
            group_id = self.group_id
        return user_id, anonymous_id, group_id, properties, context

    # -- nesting and transport -----------------------------------------------------------

    def nest(
        self,
        user_id: Optional[str],
        anonymous_id: Optional[str],
        group_id: Optional[str],
        properties: Optional[Dict[str, Any]],
        context: Optional[Dict[str, Any]],
    ) -> Scope:
        """The scope an inner ``scope(...)`` opens inside this one."""
        return Scope(
            self.user_id if user_id is None else user_id,
            self.anonymous_id if anonymous_id is None else anonymous_id,
            self.group_id if group_id is None else group_id,
            {**self.properties, **properties} if properties else self.properties,
            {**self.context, **context} if context else self.context,
        )

    def to_dict(self) -> Dict[str, Any]:
        """A plain JSON-able dict (what the Celery integration puts in message headers)."""
        out: Dict[str, Any] = {}
        for name in ("user_id", "anonymous_id", "group_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.properties:
            out["properties"] = dict(self.properties)
        if self.context:
            out["context"] = dict(self.context)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scope:
        """The inverse of ``to_dict`` (validated like ``scope(...)``'s arguments)."""
        return _build(
            None,
            data.get("user_id"),
            data.get("anonymous_id"),
            data.get("group_id"),
            data.get("properties"),
            data.get("context"),
        )


_current: contextvars.ContextVar[Optional[Scope]] = contextvars.ContextVar(
    "journy_analytics_scope", default=None
)

#: The client's hot path: ``active_scope()`` is one C call returning None outside a scope.
active_scope = _current.get


def _mapping(value: Any, field: str) -> Optional[Dict[str, Any]]:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)  # a private copy: later changes to the caller's dict cannot leak in
    raise ValidationError(f"scope {field} must be a dict, not {type(value).__name__}")


def _build(
    outer: Optional[Scope],
    user_id: Any,
    anonymous_id: Any,
    group_id: Any,
    properties: Any,
    context: Any,
) -> Scope:
    uid = checked_id(user_id, "user_id")
    aid = checked_id(anonymous_id, "anonymous_id")
    gid = checked_id(group_id, "group_id")
    props = _mapping(properties, "properties")
    ctx = _mapping(context, "context")
    if outer is None:
        return Scope(uid, aid, gid, props or _EMPTY, ctx or _EMPTY)
    return outer.nest(uid, aid, gid, props, ctx)


def activate(
    user_id: Any = None,
    anonymous_id: Any = None,
    group_id: Any = None,
    properties: Optional[Mapping[str, Any]] = None,
    context: Optional[Mapping[str, Any]] = None,
) -> contextvars.Token[Optional[Scope]]:
    """Open a scope nested in the current one; pass the token to ``deactivate``. For
    integrations whose framework opens and closes a request in two separate hooks."""
    return _current.set(
        _build(_current.get(), user_id, anonymous_id, group_id, properties, context)
    )


def activate_scope(value: Optional[Scope]) -> contextvars.Token[Optional[Scope]]:
    """Make ``value`` (e.g. one received from another process) the current scope."""
    return _current.set(value)


def deactivate(token: contextvars.Token[Optional[Scope]]) -> None:
    """Restore the scope that was current before ``activate`` returned ``token``."""
    _current.reset(token)


class scope:
    """Open a request scope: event calls inside it that leave out ``user_id`` /
    ``anonymous_id`` / ``group_id`` take them from here, and ``properties`` / ``context``
    merge into every event (the call's own keys win).

    As a context manager::

        with journy_analytics.scope(user_id="f4ca124298", group_id="tesla"):
            journy_analytics.track(event="Car Sold")

    or as a decorator, on plain and ``async`` functions alike (each call opens its own
    scope), and on generators and async generators, whose every step runs in the scope
    (in a context of their own, copied from the caller's at the call). Scopes nest; the
    outer one is back when the inner one ends, also on an exception. Arguments are
    validated here, so a bad id raises ``ValidationError`` at once rather than at the first
    event. One ``scope(...)`` object may be entered again
    (nested or later) in one thread or task; to use it from several threads or tasks at
    once, create one per use, or decorate (each decorated call has its own).
    """

    __slots__ = ("_args", "_base", "_tokens")

    def __init__(
        self,
        user_id: Any = None,
        anonymous_id: Any = None,
        group_id: Any = None,
        properties: Optional[Mapping[str, Any]] = None,
        context: Optional[Mapping[str, Any]] = None,
    ) -> None:
        # Validated (and copied) once, here: a decorator with a bad id fails at import, not
        # at the first call, and entering costs only the nesting.
        self._base = _build(None, user_id, anonymous_id, group_id, properties, context)
        self._args = (user_id, anonymous_id, group_id, properties, context)
        self._tokens: List[contextvars.Token[Optional[Scope]]] = []

    def _open(self) -> contextvars.Token[Optional[Scope]]:
        outer = _current.get()
        if outer is None:
            return _current.set(self._base)
        base = self._base
        return _current.set(
            outer.nest(
                base.user_id,
                base.anonymous_id,
                base.group_id,
                base.properties or None,
                base.context or None,
            )
        )

    def __enter__(self) -> Scope:
        self._tokens.append(self._open())
        return cast(Scope, _current.get())

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> Scope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        open_ = self._open
        if inspect.isgeneratorfunction(fn):
            return cast(F, _scoped_generator(fn, open_))
        if inspect.isasyncgenfunction(fn):
            return cast(F, _scoped_async_generator(fn, open_))
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*a: Any, **kw: Any) -> Any:
                token = open_()
                try:
                    return await fn(*a, **kw)
                finally:
                    _current.reset(token)

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(*a: Any, **kw: Any) -> Any:
            token = open_()
            try:
                return fn(*a, **kw)
            finally:
                _current.reset(token)

        return cast(F, run)

    def __repr__(self) -> str:
        names = ("user_id", "anonymous_id", "group_id", "properties", "context")
        given = ", ".join(f"{n}={v!r}" for n, v in zip(names, self._args) if v is not None)
        return f"journy_analytics.scope({given})"


# -- generators ---------------------------------------------------------------------------
#
# A generator's body runs step by step, each step in whatever context its consumer is in at
# that moment (a streaming response is iterated by the server, after the view returned and
# the request's scope closed). So a decorated generator gets a context of its own, as an
# asyncio task does: a copy of its creator's context, taken when it is called, with the
# decorator's scope opened inside it. Every step of the body (next, send, throw, close) runs
# in that context; the consumer's own scope is unchanged between steps.


def _own_context(open_: Callable[[], Any]) -> contextvars.Context:
    context = contextvars.copy_context()
    context.run(open_)
    return context


def _scoped_generator(fn: Callable[..., Any], open_: Callable[[], Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run_generator(*a: Any, **kw: Any) -> Generator[Any, Any, Any]:
        context = _own_context(open_)
        return _steps_in(context, context.run(fn, *a, **kw))

    return run_generator


def _steps_in(
    context: contextvars.Context, inner: Generator[Any, Any, Any]
) -> Generator[Any, Any, Any]:
    """PEP 380's expansion of ``yield from inner``, each step of ``inner`` run in ``context``."""
    try:
        item = context.run(next, inner)
    except StopIteration as stop:
        return stop.value
    while True:
        try:
            sent = yield item
        except GeneratorExit:
            context.run(inner.close)
            raise
        except BaseException as exc:
            step: Callable[[], Any] = functools.partial(inner.throw, exc)
        else:
            step = functools.partial(inner.send, sent)
        try:
            item = context.run(step)
        except StopIteration as stop:
            return stop.value


def _scoped_async_generator(fn: Callable[..., Any], open_: Callable[[], Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run_async_generator(*a: Any, **kw: Any) -> AsyncGenerator[Any, Any]:
        context = _own_context(open_)
        return _async_steps_in(context, context.run(fn, *a, **kw))

    return run_async_generator


async def _async_steps_in(
    context: contextvars.Context, inner: AsyncGenerator[Any, Any]
) -> AsyncGenerator[Any, Any]:
    """``_steps_in`` for an async generator: each step's awaitable runs in ``context``."""
    try:
        item = await _InContext(context, inner.__anext__())
    except StopAsyncIteration:
        return
    while True:
        try:
            sent = yield item
        except GeneratorExit:
            await _InContext(context, inner.aclose())
            raise
        except BaseException as exc:
            step: Any = inner.athrow(exc)
        else:
            step = inner.asend(sent)
        try:
            item = await _InContext(context, step)
        except StopAsyncIteration:
            return


class _InContext:
    """Await ``awaitable`` with each of its steps run in ``context`` (``Context.run`` alone
    would only cover creating it: its body runs when the awaiting task resumes it)."""

    __slots__ = ("_awaitable", "_context")

    def __init__(self, context: contextvars.Context, awaitable: Any) -> None:
        self._context = context
        self._awaitable = awaitable

    def __await__(self) -> Any:
        run = self._context.run
        steps = self._awaitable.__await__()
        step: Callable[[], Any] = functools.partial(steps.send, None)
        while True:
            try:
                signal = run(step)
            except StopIteration as stop:
                return stop.value
            try:
                answer = yield signal
            except BaseException as exc:
                step = functools.partial(steps.throw, exc)
            else:
                step = functools.partial(steps.send, answer)
