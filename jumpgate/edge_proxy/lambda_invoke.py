"""The proxy's transport to the control plane on AWS: a Lambda invoke of the function that
owns the route (``protocol.functions``), carrying the API Gateway v2 event the embedded path
hands its handlers in-process. Calls are signed by boto3 with the proxy's task role (IAM), so
the functions need no public API Gateway.

Invokes run on thread pools (boto3 blocks), the internal function's on one of its own so the
proxy's session and tunnel checks never wait behind public calls (the proxy's ``TenantShare``
bounds each tenant's share of the other, decision 0018). A function that fails
(``FunctionError``: a crash, a timeout) or cannot be reached raises
``ControlPlaneUnavailable``, which callers turn into a 502 or a refusal; throttling is
retried by boto3 with backoff first.
"""

import asyncio
import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from jumpgate.edge_proxy.events import Event
from jumpgate.protocol.functions import Function, function_for

logger = logging.getLogger(__name__)
INVOKE_SECONDS = 35
"""How long one invoke may take (the functions' own timeout is 30 s)."""


class ControlPlaneUnavailable(Exception):
    """The function could not be invoked or failed; ``str()`` says which and why."""


class LambdaInvoke:
    """An ``Invoke`` that calls one Lambda function per route."""

    def __init__(
        self,
        functions: Mapping[Function, str],
        *,
        region: str,
        endpoint: str | None = None,
        workers: int = 32,
        internal_workers: int = 8,
    ) -> None:
        missing = [f.value for f in Function if not functions.get(f)]
        if missing:
            raise ValueError(f"name the Lambda function for: {', '.join(missing)}")
        self._functions = dict(functions)
        self._client: Any = boto3.client(
            "lambda",
            region_name=region,
            endpoint_url=endpoint,
            config=BotoConfig(
                retries={"mode": "standard", "max_attempts": 3},
                read_timeout=INVOKE_SECONDS,
                max_pool_connections=workers + internal_workers,
            ),
        )
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="lambda-invoke")
        self._internal_pool = ThreadPoolExecutor(
            internal_workers, thread_name_prefix="lambda-invoke-internal"
        )

    def _invoke(self, name: str, payload: bytes) -> Event:
        try:
            answer = self._client.invoke(
                FunctionName=name, InvocationType="RequestResponse", Payload=payload
            )
            body = answer["Payload"].read()
        except (BotoCoreError, ClientError) as exc:
            raise ControlPlaneUnavailable(f"cannot invoke {name}: {exc}") from exc
        if answer.get("FunctionError"):
            logger.error(
                "control-plane function failed",
                extra={"function": name, "error": body[:500].decode(errors="replace")},
            )
            raise ControlPlaneUnavailable(f"{name} failed ({answer['FunctionError']})")
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict) or "statusCode" not in decoded:
            raise ControlPlaneUnavailable(f"{name} answered something that is not a response")
        return decoded

    async def __call__(self, event: Event) -> Event:
        function = function_for(str(event.get("rawPath", "")))
        name = self._functions[function]
        payload = json.dumps(event, separators=(",", ":")).encode()
        pool = self._internal_pool if function is Function.INTERNAL else self._pool
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, partial(self._invoke, name, payload))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._internal_pool.shutdown(wait=False, cancel_futures=True)
