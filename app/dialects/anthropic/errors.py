"""The Anthropic request validation error (the envelope and statuses are in ``app.errors``)."""

from __future__ import annotations


class AnthropicRequestError(Exception):
    """A Messages request body that cannot be served; ``param`` names the field (``messages.2.content``)."""

    def __init__(self, message: str, param: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code  # None: the generic invalid_request
