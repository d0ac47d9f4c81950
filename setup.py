"""octo_like: Octo-style generalist robot policies in JAX.

Direct dependencies are pinned exactly here; `requirements.lock` pins the whole resolved set
(used as a constraints file by the Makefile) so a fresh machine installs the same versions.
"""

from setuptools import find_packages, setup

JAX = "jax==0.10.2"

INSTALL_REQUIRES = [
    JAX,
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "sentencepiece==0.2.3",
    "safetensors==0.8.0",
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "numpy==2.4.6",
    "pillow==12.0.0",
    "psutil==7.2.2",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "tensorboard==2.21.0",
    # Simulation (MetaWorld demonstrations, the embedded default data, closed-loop evaluation).
    "gymnasium==1.4.0",
    "mujoco==3.3.0",
    "metaworld==3.1.1",
    "imageio==2.38.1",
    "imageio-ffmpeg==0.8.1",
    # Bringing your own data (.hdf5 episodes) and serving a policy to a robot computer.
    "h5py==3.14.0",
    "websockets==17.4",
    "msgpack==1.2.4",
    "msgpack-numpy==0.4.8",
    # Cluster launchers write Kubernetes manifests (scripts/launch.py gke).
    "pyyaml==6.0.3",
]

# Reading LeRobot datasets' videos (data/convert_lerobot.py): PyAV, FFmpeg's libraries in one
# wheel (AV1 through libdav1d, h264, hevc, vp9); the parquet side needs only pyarrow, which
# tensorflow-datasets already brings.
LEROBOT = ["av==18.1.0"]

# Accelerator builds of the same jax version: `pip install -e ".[tpu]"` on every TPU VM worker,
# `pip install -e ".[cuda12]"` (or cuda13) on an NVIDIA GPU node. jax's own extras pin the
# matching libtpu / CUDA plugin and the pip-packaged CUDA libraries.
EXTRAS_REQUIRE = {
    # The tests compile for real TPU topologies on compile-only devices: libtpu, no TPU needed.
    "dev": [
        "pytest==9.2.0",
        "pytest-timeout==2.4.0",
        "pytest-xdist==3.8.0",
        "ruff==0.17.5",
        JAX.replace("jax", "jax[tpu]", 1),
        *LEROBOT,  # the LeRobot fixture tests decode video
    ],
    "lerobot": LEROBOT,
    "tpu": [JAX.replace("jax", "jax[tpu]", 1)],
    "cuda12": [JAX.replace("jax", "jax[cuda12]", 1)],
    "cuda13": [JAX.replace("jax", "jax[cuda13]", 1)],
    # Jupyter for scripts/inference_notebook.ipynb: `pip install -e ".[notebook]"`.
    "notebook": ["notebook==7.6.5", "ipykernel==7.4.0"],
}

setup(
    name="octo_like",
    version="0.1.0",
    description="Octo-style vision-language-action policies in JAX",
    # Every pin of requirements.lock has wheels for 3.11-3.13 (tests/test_install.py checks).
    python_requires=">=3.11,<3.14",
    # The policy client is its own small distribution (packages/octo_like_client, no JAX); the
    # full install carries the same source so octo_like.inference re-exports it.
    packages=[*find_packages(include=["octo_like", "octo_like.*"]), "octo_like_client"],
    package_dir={"octo_like_client": "packages/octo_like_client/src/octo_like_client"},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
