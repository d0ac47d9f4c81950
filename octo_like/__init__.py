"""octo_like: Octo-style generalist robot policies in JAX.

`octo_like.OctoModel` is imported lazily, so `import octo_like` stays cheap for data-only users.
"""

__version__ = "0.1.0"
__all__ = ["OctoModel"]


def __getattr__(name: str):
    if name == "OctoModel":
        from octo_like.model.octo_model import OctoModel

        return OctoModel
    raise AttributeError(f"module 'octo_like' has no attribute {name!r}")
