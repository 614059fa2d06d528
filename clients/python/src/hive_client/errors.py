"""The exceptions the client raises: one `HiveError` base, a subclass per kind of refusal, and
`ConnectionFailed` when the hive could not be reached (after the retries)."""

from __future__ import annotations


class HiveError(Exception):
    """Hive refused a request, or could not be reached.

    `status` is the HTTP status (None when no answer came), `code` the API's error code (such as
    `not_found` or `validation_failed`; `connection` when no answer came), `message` its message.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "unknown",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code} ({status}): {message}" if status else f"{code}: {message}")
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after


class InvalidInput(HiveError):
    """The request was refused as malformed or invalid (400, 413, 415, 422)."""


class Unauthorized(HiveError):
    """No token, or one unknown or revoked (401)."""


class Forbidden(HiveError):
    """The token's role may not do this (403), or the agent is not the task's assignee."""


class NotFound(HiveError):
    """No such agent, task, project, token or route (404)."""


class Conflict(HiveError):
    """The request conflicts with the entity's state (409): already exists, an invalid transition, a
    lost race, or a history that cannot be folded."""


class Unavailable(HiveError):
    """The hive cannot answer now (503 or 429): overloaded, unavailable, or a read's `Hive-Min-Seq`
    not projected in time. The client retries these itself before it raises one."""


class ServerError(HiveError):
    """An error of the hive itself (500 and other statuses it should not answer)."""


class ConnectionFailed(HiveError):
    """No answer: the connection failed or was lost (after the retries)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None, code="connection")


class UnexpectedAnswer(HiveError):
    """An answer the client cannot read as the contract says (not JSON, or not the documented shape)."""


_BY_STATUS: dict[int, type[HiveError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    415: InvalidInput,
    422: InvalidInput,
    429: Unavailable,
    503: Unavailable,
}


def error_for(status: int) -> type[HiveError]:
    """The exception class of an error answer's status."""
    return _BY_STATUS.get(status, ServerError if status >= 500 else HiveError)
