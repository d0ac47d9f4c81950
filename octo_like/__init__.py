"""octo_like: Octo-style generalist robot policies in JAX."""

__version__ = "0.1.0"
