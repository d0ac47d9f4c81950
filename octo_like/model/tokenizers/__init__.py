"""Tokenizers: batch entries (see `octo_like/schema.py`) -> `TokenGroup`s of raw features.

Projection to the transformer width and positional embeddings are applied by the model.
"""

from octo_like.model.tokenizers.image import (
    IMAGE_ENCODERS,
    FiLM,
    ImageTokenizer,
    PatchEncoder,
    SmallStem16,
    normalize_image,
)
from octo_like.model.tokenizers.keypoints import SpatialSoftmaxKeypoints
from octo_like.model.tokenizers.lowdim import PROPRIO_MODES, ProprioTokenizer

__all__ = [
    "FiLM",
    "IMAGE_ENCODERS",
    "ImageTokenizer",
    "PROPRIO_MODES",
    "PatchEncoder",
    "ProprioTokenizer",
    "SmallStem16",
    "SpatialSoftmaxKeypoints",
    "normalize_image",
]
