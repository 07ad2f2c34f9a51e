"""mole: Model Optimization from Learning Examples."""

__version__ = "0.1.0"
