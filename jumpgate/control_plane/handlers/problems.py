"""The one table from errors to HTTP statuses and problem types."""

import json
from typing import Any

from jumpgate.control_plane import errors
from jumpgate.control_plane.secrets import SecretUnreadable
from jumpgate.protocol.problems import CONTENT_TYPE, ProblemType

# Most specific first: the first class an error is an instance of decides.
_TABLE: list[tuple[type[errors.JumpgateError], int, ProblemType, str]] = [
    (errors.CertificateExpired, 401, ProblemType.CERTIFICATE_EXPIRED, "Certificate expired"),
    (errors.UserLocked, 403, ProblemType.USER_LOCKED, "User locked"),
    (errors.OTPReplayed, 401, ProblemType.OTP_REPLAYED, "One-time code replayed"),
    (errors.LoginFailed, 401, ProblemType.LOGIN_FAILED, "Login failed"),
    (errors.Unauthenticated, 401, ProblemType.UNAUTHENTICATED, "Unauthenticated"),
    (errors.AccessDenied, 403, ProblemType.ACCESS_DENIED, "Access denied"),
    (errors.InviteInvalid, 403, ProblemType.INVITE_INVALID, "Invite invalid"),
    (errors.TokenInvalid, 403, ProblemType.TOKEN_INVALID, "Join token invalid"),
    (errors.UnknownTenant, 404, ProblemType.UNKNOWN_TENANT, "Unknown cluster"),
    (errors.NotFound, 404, ProblemType.NOT_FOUND, "Not found"),
    (errors.AlreadyExists, 409, ProblemType.ALREADY_EXISTS, "Already exists"),
    (errors.RecordingModified, 409, ProblemType.RECORDING_MODIFIED, "Recording modified"),
    (errors.Conflict, 409, ProblemType.CONFLICT, "Conflict"),
    (errors.StoreUnavailable, 503, ProblemType.STORE_UNAVAILABLE, "Store unavailable"),
    (errors.InvalidRequest, 400, ProblemType.INVALID_REQUEST, "Invalid request"),
    (SecretUnreadable, 500, ProblemType.INTERNAL, "Internal error"),
]


def problem(status: int, type_: ProblemType, title: str, detail: str) -> dict[str, Any]:
    """An API Gateway v2 response carrying problem+json."""
    body = {"type": type_.value, "title": title, "status": status, "detail": detail}
    return {
        "statusCode": status,
        "headers": {"Content-Type": CONTENT_TYPE},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def classify(error: errors.JumpgateError) -> tuple[int, ProblemType, str]:
    """Status, problem type and title of an error."""
    for cls, status, type_, title in _TABLE:
        if isinstance(error, cls):
            return status, type_, title
    return 500, ProblemType.INTERNAL, "Internal error"


def from_error(error: errors.JumpgateError) -> dict[str, Any]:
    """The response for a control-plane error; internal ones say nothing of their cause."""
    status, type_, title = classify(error)
    detail = error.message if status < 500 else "internal error: see the platform logs"
    return problem(status, type_, title, detail)
