"""The root of every error the cloud raises on purpose, and the HTTP answer each class gives.

Each subclass declares its own ``status`` (HTTP) and ``code`` (the ``"error"`` field of the
JSON body ``{"error": code, "message": text}``), the way mobilityhouse/ocpp's exceptions
declare ``code``. ``cloud.app``'s middleware maps an error by its class alone: it never reads
the message, which is for people. A new error is a new subclass, and the API answers it with
no change to ``cloud.app``.

A ``status`` of 500 means a bug or a broken invariant (a config, key or ledger error that
reached a request): the API logs it with its traceback and answers ``internal_error`` with a
generic message, never the error's text.

This module imports nothing from ``cloud`` so that every cloud module can import it.
"""

from __future__ import annotations

from typing import ClassVar

INTERNAL_STATUS = 500
INTERNAL_CODE = "internal_error"


class CloudError(Exception):
    """An error the cloud raises on purpose; ``status`` and ``code`` say how the API answers it."""

    status: ClassVar[int] = INTERNAL_STATUS
    code: str = INTERNAL_CODE
    """A class attribute; a class whose code comes from elsewhere (a provider's decline code)
    may set it per instance, the status stays the class's."""

    def http_headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After``, ``WWW-Authenticate``); none by default."""
        return {}


class BadRequest(CloudError):
    """The request is wrong (a query parameter, a format); the message says what."""

    status = 400
    code = "bad_request"


class NotFound(CloudError):
    """The path names nothing that exists (or nothing the caller may see)."""

    status = 404
    code = "not_found"


class Forbidden(CloudError):
    """The caller is authenticated but not allowed (operators only)."""

    status = 403
    code = "forbidden"


class InvalidBody(CloudError):
    """The JSON body does not match the route's schema; the message lists the problems."""

    status = 400
    code = "invalid_body"


class BadJson(CloudError):
    """The body is not JSON the API can take (not JSON, too deep, a lone surrogate)."""

    status = 400
    code = "bad_json"


def all_error_classes() -> list[type[CloudError]]:
    """Every ``CloudError`` subclass imported so far, depth first (for the docs table and tests)."""
    found: list[type[CloudError]] = []
    stack: list[type[CloudError]] = [CloudError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(reversed(cls.__subclasses__()))
    return found


__all__ = [
    "INTERNAL_CODE",
    "INTERNAL_STATUS",
    "BadJson",
    "BadRequest",
    "CloudError",
    "Forbidden",
    "InvalidBody",
    "NotFound",
    "all_error_classes",
]
