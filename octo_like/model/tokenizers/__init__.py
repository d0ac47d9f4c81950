"""Tokenizers: batch entries (see `octo_like/schema.py`) -> `TokenGroup`s of raw features.

Projection to the transformer width and positional embeddings are applied by the model.
"""

from octo_like.model.tokenizers.image import ImageTokenizer, normalize_image
from octo_like.model.tokenizers.keypoints import SpatialSoftmaxKeypoints
from octo_like.model.tokenizers.lowdim import PROPRIO_MODES, ProprioTokenizer
from octo_like.model.tokenizers.stems import IMAGE_ENCODERS, FiLM, PatchEncoder, SmallStem16

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
