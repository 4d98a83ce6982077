"""The one error volgen raises; every volgen module imports it from here."""


class VolgenError(ValueError):
    """A volume description volgen cannot turn into volfiles; the message says what is allowed."""
