"""Host-side sentencepiece tokenization of language instructions, T5 style.

Runs in numpy between the data pipeline (``task.language_instruction``: bytes[b]) and the model
(``tokens`` int32[b, L], ``mask`` bool[b, L]). T5 convention: the pieces of the text, then EOS
(id 1), then padding (id 0). An empty instruction means "no language" and gets an all-False mask
(not a lone EOS), so downstream attention ignores it entirely.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import sentencepiece

from octo_like import storage

log = logging.getLogger(__name__)

PAD_ID = 0
EOS_ID = 1
SPIECE_FILENAME = "spiece.model"
_MAX_REPORTED = 1000  # distinct truncated instructions remembered (each is logged once)


class TextTokenizer:
    """Turns instructions into fixed-length ``tokens`` / ``mask`` arrays."""

    def __init__(self, spiece_model_path: str, max_length: int = 16):
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        path = storage.absolute(spiece_model_path)
        if not storage.isfile(path):
            raise FileNotFoundError(f"sentencepiece model not found: {path}")
        processor = sentencepiece.SentencePieceProcessor(model_file=storage.local_file(path))
        if processor.pad_id() != PAD_ID or processor.eos_id() != EOS_ID:
            raise ValueError(
                f"{path}: expected a T5-style sentencepiece model with pad_id={PAD_ID} and "
                f"eos_id={EOS_ID}, got pad_id={processor.pad_id()} eos_id={processor.eos_id()}"
            )
        self._processor = processor
        self.spiece_model_path = path
        self.max_length = max_length
        self.vocab_size: int = processor.get_piece_size()
        self._reported: set[str] = set()  # truncated instructions already logged

    @classmethod
    def from_directory(cls, checkpoint_dir: str, max_length: int = 16) -> TextTokenizer:
        """Reads ``<checkpoint_dir>/spiece.model`` (the Hugging Face T5 layout)."""
        return cls(storage.join(checkpoint_dir, SPIECE_FILENAME), max_length)

    def __call__(self, texts: Sequence[str | bytes] | np.ndarray) -> dict[str, np.ndarray]:
        """Tokenizes a batch.

        Returns ``{"tokens": int32[b, max_length], "mask": bool[b, max_length]}``. Texts longer
        than ``max_length - 1`` pieces are truncated and still end with EOS; each truncated
        instruction is logged once (a warning naming what the model reads instead).
        """
        strings = _as_strings(texts)
        tokens = np.full((len(strings), self.max_length), PAD_ID, dtype=np.int32)
        mask = np.zeros((len(strings), self.max_length), dtype=bool)
        nonempty = [i for i, s in enumerate(strings) if s.strip()]
        pieces = self._processor.encode([strings[i] for i in nonempty]) if nonempty else []
        for row, ids in zip(nonempty, pieces, strict=True):
            if len(ids) > self.max_length - 1:
                self._report_truncation(strings[row], ids)
            ids = list(ids[: self.max_length - 1]) + [EOS_ID]
            tokens[row, : len(ids)] = ids
            mask[row, : len(ids)] = True
        return {"tokens": tokens, "mask": mask}

    def _report_truncation(self, text: str, ids: Sequence[int]) -> None:
        """Logs each truncated instruction once, with what the model will actually read."""
        if text in self._reported or len(self._reported) >= _MAX_REPORTED:
            return
        self._reported.add(text)
        kept = self._processor.decode(list(ids[: self.max_length - 1]))
        log.warning(
            "instruction %r has %d pieces, more than max_length - 1 = %d: the model reads %r "
            "(raise model.language.max_length to keep it whole)",
            text, len(ids), self.max_length - 1, kept,
        )  # fmt: skip

    def decode(self, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
        """Inverse of ``__call__`` up to truncation (for debugging and inspection)."""
        out = []
        for row, row_mask in zip(np.asarray(tokens), np.asarray(mask), strict=True):
            ids = [
                int(t)
                for t, m in zip(row, row_mask, strict=True)
                if m and t not in (PAD_ID, EOS_ID)
            ]
            out.append(self._processor.decode(ids))
        return out


def _as_strings(texts: Sequence[str | bytes] | np.ndarray) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of instructions, got a single string; wrap it")
    if isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise ValueError(f"texts must be 1-D (one instruction per batch row), got {texts.shape}")
    strings = []
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        elif not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be str or bytes, got {type(text).__name__}")
        strings.append(text)
    return strings
