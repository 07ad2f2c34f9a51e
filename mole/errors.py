"""The one exception family mole raises for bad input; the CLI prints it as a single line."""


class MoleError(Exception):
    """Base class: a problem with the user's input or files, reported in one line."""


class ConfigError(MoleError, ValueError):
    """A config field has a bad value. The message starts with the field's dotted path."""

    def __init__(self, field: str, problem: str):
        self.field = field
        super().__init__(f"{field}: {problem}")


class StoreError(MoleError):
    """A zoo on disk is missing, corrupt or inconsistent with its manifest."""


def check_int(value: object, field: str, low: int = 1) -> int:
    """An integer >= low (a bool is not one), else a ConfigError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ConfigError(field, f"must be {what}, got {value!r}")
    return value


def check_choice(value: object, valid: tuple, field: str) -> object:
    """One of `valid`, else a ConfigError naming `field`: "unknown 'x'; valid: a, b"."""
    if value not in valid:
        raise ConfigError(field, f"unknown {value!r}; valid: {', '.join(map(str, valid))}")
    return value
