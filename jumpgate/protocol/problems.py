"""Problem types of the API (RFC 9457 problem+json), stable across releases.

Clients branch on ``type``; ``detail`` is a one-line message for people that says what went
wrong and what to do next.
"""

from enum import StrEnum

CONTENT_TYPE = "application/problem+json"
MAX_BODY_BYTES = 64 * 1024
"""Request bodies larger than this are refused before they are parsed."""


class ProblemType(StrEnum):
    """``type`` URIs; the HTTP status of each is fixed in the server's error table."""

    INVALID_REQUEST = "urn:jumpgate:problem:invalid-request"
    MALFORMED_JSON = "urn:jumpgate:problem:malformed-json"
    BODY_TOO_LARGE = "urn:jumpgate:problem:body-too-large"
    UNSUPPORTED_MEDIA_TYPE = "urn:jumpgate:problem:unsupported-media-type"
    UNAUTHENTICATED = "urn:jumpgate:problem:unauthenticated"
    CERTIFICATE_EXPIRED = "urn:jumpgate:problem:certificate-expired"
    LOGIN_FAILED = "urn:jumpgate:problem:login-failed"
    USER_LOCKED = "urn:jumpgate:problem:user-locked"
    OTP_REPLAYED = "urn:jumpgate:problem:otp-replayed"
    ACCESS_DENIED = "urn:jumpgate:problem:access-denied"
    INVITE_INVALID = "urn:jumpgate:problem:invite-invalid"
    TOKEN_INVALID = "urn:jumpgate:problem:token-invalid"  # noqa: S105 - a URI
    UNKNOWN_TENANT = "urn:jumpgate:problem:unknown-tenant"
    NOT_FOUND = "urn:jumpgate:problem:not-found"
    ALREADY_EXISTS = "urn:jumpgate:problem:already-exists"
    CONFLICT = "urn:jumpgate:problem:conflict"
    RECORDING_MODIFIED = "urn:jumpgate:problem:recording-modified"
    STORE_UNAVAILABLE = "urn:jumpgate:problem:store-unavailable"
    RATE_LIMITED = "urn:jumpgate:problem:rate-limited"  # 429, with Retry-After
    METHOD_NOT_ALLOWED = "urn:jumpgate:problem:method-not-allowed"
    INTERNAL = "urn:jumpgate:problem:internal"
