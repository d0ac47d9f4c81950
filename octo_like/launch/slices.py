"""The libtpu topology (``v4:4x4x4``) a slice's accelerator type (``v4-128``) stands for, so a
launch can compile its step for the slice it is given (`gate.py`) without being told twice.

Accelerator types are gcloud's (``--accelerator-type`` of ``gcloud compute tpus``): ``v4-N`` and
``v5p-N`` count TensorCores (two per chip), ``v5litepod-N`` and ``v6e-N`` count chips. Their
shapes are the default topologies of Google's Cloud TPU pages; a slice created with another
``--topology`` is named to the compile check directly (``scripts/compile_check.py``).
"""

from __future__ import annotations

# gcloud's accelerator-type prefix -> (libtpu generation name, TensorCores per chip in the name)
TPU_VM_GENERATIONS = {
    "v4": ("v4", 2),
    "v5p": ("v5p", 2),
    "v5litepod": ("v5e", 1),
    "v5e": ("v5e", 1),
    "v6e": ("v6e", 1),
}
# Chips -> default topology (chips per axis). v4/v5p chips sit in a 3-D torus, v5e/v6e in 2-D.
SHAPES_3D = {
    4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
    256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16",
}  # fmt: skip
# (A one-chip v5e/v6e slice is left out: libtpu describes no topology smaller than one host's
# 2x2 chips without being told the host's bounds.)
SHAPES_2D = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
# GKE's node-selector accelerator -> libtpu generation name (its topology is given as is).
GKE_GENERATIONS = {
    "tpu-v4-podslice": "v4",
    "tpu-v5p-slice": "v5p",
    "tpu-v5-lite-podslice": "v5e",
    "tpu-v6e-slice": "v6e",
}


def tpu_vm_topology(accelerator_type: str) -> str:
    """'v4-128' -> 'v4:4x4x4', 'v5litepod-16' -> 'v5e:4x4', 'v6e-256' -> 'v6e:16x16'."""
    prefix, _, size = accelerator_type.lower().rpartition("-")
    if prefix not in TPU_VM_GENERATIONS or not size.isdigit():
        raise SystemExit(
            f"--accelerator_type {accelerator_type!r} is not a TPU slice the compile check "
            f"knows: give gcloud's name, e.g. v4-128, v5p-128, v5litepod-16, v6e-256 "
            f"(generations {', '.join(sorted(TPU_VM_GENERATIONS))}), or --skip_compile_check"
        )
    generation, cores_per_chip = TPU_VM_GENERATIONS[prefix]
    chips, remainder = divmod(int(size), cores_per_chip)
    shapes = SHAPES_3D if generation in ("v4", "v5p") else SHAPES_2D
    if remainder or chips not in shapes:
        sizes = ", ".join(f"{prefix}-{n * cores_per_chip}" for n in sorted(shapes))
        raise SystemExit(
            f"--accelerator_type {accelerator_type}: no default topology of {int(size)} "
            f"{'TensorCores' if cores_per_chip > 1 else 'chips'} (known: {sizes}). Check "
            "the slice's own topology with scripts/compile_check.py --topology "
            f"{generation}:AxBx.., then launch with --skip_compile_check"
        )
    return f"{generation}:{shapes[chips]}"


def gke_topology(accelerator: str, topology: str) -> str:
    """'tpu-v5-lite-podslice', '16x16' -> 'v5e:16x16' (GKE names the shape itself)."""
    if accelerator not in GKE_GENERATIONS:
        raise SystemExit(f"--tpu_accelerator {accelerator!r}: one of {sorted(GKE_GENERATIONS)}")
    return f"{GKE_GENERATIONS[accelerator]}:{topology.lower()}"
