"""Language encoders for task instructions: T5 (pretrained, HF format) or a small trainable one.

Host side, ``TextTokenizer`` turns ``task.language_instruction`` bytes[b] into ``tokens``
int32[b, L] / ``mask`` bool[b, L]; on device, an encoder maps them to float[b, L, d].
"""

from octo_like.model.language.hf_checkpoint import load_t5_encoder, save_t5_encoder
from octo_like.model.language.small_encoder import SmallTextEncoder
from octo_like.model.language.t5 import T5Encoder, T5EncoderConfig, relative_position_bucket
from octo_like.model.language.tokenizer import TextTokenizer

__all__ = [
    "SmallTextEncoder",
    "T5Encoder",
    "T5EncoderConfig",
    "TextTokenizer",
    "load_t5_encoder",
    "relative_position_bucket",
    "save_t5_encoder",
]
