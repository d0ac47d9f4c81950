"""Finding primitives in a traced program, for tests that check what a computation reads and
writes (dtypes of products, which operands a backward pass uses)."""

from __future__ import annotations


def equations(jaxpr, primitive: str) -> list:
    """Every equation of `primitive` in `jaxpr` (a Jaxpr or ClosedJaxpr), those of sub-programs
    included: custom_vjp bodies, pjit calls, and lists of them (cond branches)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            found.append(eqn)
        for value in eqn.params.values():
            for inner in value if isinstance(value, (list, tuple)) else (value,):
                if hasattr(getattr(inner, "jaxpr", inner), "eqns"):
                    found += equations(inner, primitive)
    return found
