"""Lambda's Invoke API on loopback, running function handlers in this process.

moto answers Lambda's API but runs no code, so the proxy's ``LambdaInvoke`` is tested against
this instead (as ``sam local start-lambda`` serves it): boto3 builds and signs the real
request, the endpoint calls the handler with the event and a context, and answers as Lambda
does, including ``X-Amz-Function-Error`` when the handler raises.
"""

import json
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

PREFIX = "/2015-03-31/functions/"
SUFFIX = "/invocations"


@dataclass
class Context:
    """What Lambda hands a function besides the event (the fields Powertools reads)."""

    function_name: str
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = ""
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"


class LambdaEndpoint:
    def __init__(self, handlers: dict[str, Callable[[Any, Any], Any]]) -> None:
        self._handlers = handlers
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint._serve(self)

            def log_message(self, *_: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?")[0]
        name = path.removeprefix(PREFIX).removesuffix(SUFFIX)
        body = request.rfile.read(int(request.headers.get("Content-Length", 0)))
        handler = self._handlers.get(name)
        if not path.startswith(PREFIX) or handler is None:
            answer, status = {"Type": "User", "Message": f"Function not found: {name}"}, 404
            self._reply(request, status, answer, {"x-amzn-ErrorType": "ResourceNotFoundException"})
            return
        context = Context(name, invoked_function_arn=f"arn:aws:lambda:us-east-1:0:function:{name}")
        try:
            result = handler(json.loads(body), context)
        except Exception as exc:
            error = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
            self._reply(request, 200, error, {"X-Amz-Function-Error": "Unhandled"})
            return
        self._reply(request, 200, result, {})

    @staticmethod
    def _reply(
        request: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str]
    ) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)

    def __enter__(self) -> "LambdaEndpoint":
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
