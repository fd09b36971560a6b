"""A Powertools resolver that keeps the request it serves per request, not per process.

Powertools' ``resolve`` stores the event in class attributes (``BaseRouter.current_event``,
``BaseRouter.lambda_context``), and the routing ``context`` dict and the middleware trace
(``processed_stack_frames``) are one per resolver: two requests resolved at once in one
process read each other's path, headers, tenant and route arguments. Lambda serves one
request per container, so it never shows there; the embedded daemon runs handlers on
threads, so it did (docs/decisions/0010, then 0018).

This subclass turns those four attributes into properties over a ``ContextVar`` holding one
state per request, set where Powertools builds the proxy event (``_to_proxy_event``) inside a
context of its own (``resolve``); Powertools' own ``HttpResolverLocal`` does the same for
its ASGI path. Every read of them in Powertools goes through ``self``/``app`` (the route
call, the validation middlewares, the exception and not-found handlers, the response
builder), so they all see the request's own state. Route middleware stacks, which
Powertools builds lazily on a route's first call and which two first calls at once would
build twice (one of them half-built), are built before the first request (``prepare``).
"""

import contextvars
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent


@dataclass
class _RequestState:
    event: BaseProxyEvent | None = None
    lambda_context: Any = None
    context: dict[str, Any] = field(default_factory=dict)
    processed_stack_frames: list[str] = field(default_factory=list)


class ConcurrentResolver(APIGatewayHttpResolver):
    """``APIGatewayHttpResolver`` that may resolve several requests at once, one per thread."""

    def __init__(self, **options: Any) -> None:
        self._startup = _RequestState()  # what Powertools sets up before any request
        self._state_var: contextvars.ContextVar[_RequestState] = contextvars.ContextVar(
            f"jumpgate-request-{id(self)}"
        )
        super().__init__(**options)

    @property
    def _state(self) -> _RequestState:
        return self._state_var.get(self._startup)

    @property  # type: ignore[override]
    def current_event(self) -> APIGatewayProxyEventV2:
        event = self._state.event
        if not isinstance(event, APIGatewayProxyEventV2):
            raise RuntimeError("current_event is only set while a request is resolved")
        return event

    @current_event.setter
    def current_event(self, value: APIGatewayProxyEventV2) -> None:
        self._state.event = value

    @property
    def lambda_context(self) -> Any:
        return self._state.lambda_context

    @lambda_context.setter
    def lambda_context(self, value: Any) -> None:
        self._state.lambda_context = value

    @property
    def context(self) -> dict[str, Any]:
        return self._state.context

    @context.setter
    def context(self, value: dict[str, Any]) -> None:
        self._state.context = value

    @property
    def processed_stack_frames(self) -> list[str]:
        return self._state.processed_stack_frames

    @processed_stack_frames.setter
    def processed_stack_frames(self, value: list[str]) -> None:
        self._state.processed_stack_frames = value

    def prepare(self) -> None:
        """Build every route's middleware stack now, while one thread holds the resolver."""
        for route in self._static_routes + self._dynamic_routes:
            if not route._middleware_stack_built:
                route._build_middleware_stack(router_middlewares=self._router_middlewares, app=self)

    def resolve(self, event: Any, context: Any) -> dict[str, Any]:
        """Resolve ``event`` with a state of its own, whatever else runs meanwhile."""
        return contextvars.copy_context().run(self._resolve_alone, event, context)

    def _resolve_alone(self, event: Any, context: Any) -> dict[str, Any]:
        self._state_var.set(_RequestState(lambda_context=context))
        return super().resolve(event, context)

    def _to_proxy_event(self, event: dict[str, Any]) -> BaseProxyEvent:
        # Powertools then stores this in BaseRouter.current_event too; nothing of ours reads
        # that class attribute (the properties above shadow it for this resolver).
        proxy = super()._to_proxy_event(event)
        self._state.event = proxy
        return proxy
