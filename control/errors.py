"""The control service's exception tree; the REST layer maps each to one HTTP status."""


class GlusterctlError(Exception):
    """Root of every error the control service reports to a user."""

    status = 400


class InvalidInput(GlusterctlError):
    status = 422


class NotFound(GlusterctlError):
    status = 404


class Conflict(GlusterctlError):
    status = 409


class Unauthorized(GlusterctlError):
    status = 401


class Forbidden(GlusterctlError):
    status = 403


class TooManyRequests(GlusterctlError):
    """Too many failed attempts: ``retry_after`` says how many seconds to wait."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
