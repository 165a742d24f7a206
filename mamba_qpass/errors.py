"""Exceptions that name what is supported, so a user knows the fix."""


class UnsupportedModelError(ValueError):
    """The model, its config or its dtype is outside what mamba-qpass captures."""
