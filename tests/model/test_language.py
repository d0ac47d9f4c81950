"""Language path: tokenizer conventions, T5 encoder numerics vs. an independent numpy reference,
HF checkpoint round trips and errors, padding invariance, the small trainable encoder, bf16."""

import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import sentencepiece
from flax import nnx

from octo_like.model.language import (
    SmallTextEncoder,
    T5Encoder,
    T5EncoderConfig,
    TextTokenizer,
    load_t5_encoder,
    relative_position_bucket,
    save_t5_encoder,
)
from octo_like.model.language.testing import write_tiny_t5_checkpoint

INSTRUCTIONS = [
    "pick up the red block",
    b"put the spoon in the pot",
    "",
    "open the top drawer and then close the microwave door and wipe the table",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return write_tiny_t5_checkpoint(str(tmp_path_factory.mktemp("tiny_t5")))


@pytest.fixture(scope="module")
def tokenizer(tiny_dir) -> TextTokenizer:
    return TextTokenizer.from_directory(tiny_dir, max_length=16)


@pytest.fixture(scope="module")
def batch(tokenizer) -> dict[str, np.ndarray]:
    return tokenizer(INSTRUCTIONS)


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_appends_eos_and_masks_padding(tiny_dir, tokenizer, batch):
    pieces = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(tiny_dir, "spiece.model")
    ).encode("pick up the red block")
    tokens, mask = batch["tokens"], batch["mask"]
    assert tokens.dtype == np.int32 and mask.dtype == bool and tokens.shape == (4, 16)
    n = len(pieces)
    assert 1 < n < 15
    np.testing.assert_array_equal(tokens[0, :n], pieces)
    assert tokens[0, n] == 1 and mask[0].sum() == n + 1 and mask[0, : n + 1].all()
    assert (tokens[~mask] == 0).all()
    assert 1 not in pieces and 0 not in pieces


def test_tokenizer_truncation_keeps_eos_last(tiny_dir):
    short = TextTokenizer.from_directory(tiny_dir, max_length=5)
    full = TextTokenizer.from_directory(tiny_dir, max_length=64)([INSTRUCTIONS[3]])
    out = short([INSTRUCTIONS[3]])
    assert full["mask"].sum() > 5
    assert out["mask"].all()
    np.testing.assert_array_equal(out["tokens"][0, :4], full["tokens"][0, :4])
    assert out["tokens"][0, 4] == 1


def test_truncation_is_logged_once_per_instruction_with_what_the_model_reads(tiny_dir, caplog):
    short = TextTokenizer.from_directory(tiny_dir, max_length=5)
    fits = TextTokenizer.from_directory(tiny_dir, max_length=64)
    with caplog.at_level(logging.WARNING, logger="octo_like.model.language.tokenizer"):
        fits([INSTRUCTIONS[3]])
        assert caplog.records == []  # nothing is cut: nothing to say
        for _ in range(3):
            short([INSTRUCTIONS[3], INSTRUCTIONS[3]])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    kept = short.decode(*(short([INSTRUCTIONS[3]])[k] for k in ("tokens", "mask")))[0]
    assert repr(INSTRUCTIONS[3]) in messages[0] and repr(kept) in messages[0]
    assert "max_length" in messages[0]


def test_tokenizer_empty_instruction_is_all_false(batch, tokenizer):
    assert not batch["mask"][2].any() and (batch["tokens"][2] == 0).all()
    assert not tokenizer([b"", "   "])["mask"].any()


def test_tokenizer_bytes_str_numpy_equal_and_deterministic(tiny_dir, tokenizer):
    texts = ["pick up the red block", "open the top drawer"]
    as_str = tokenizer(texts)
    as_bytes = tokenizer([t.encode() for t in texts])
    as_numpy = tokenizer(np.array([t.encode() for t in texts], dtype=object))
    again = TextTokenizer.from_directory(tiny_dir)(texts)
    for other in (as_bytes, as_numpy, again):
        for key in ("tokens", "mask"):
            np.testing.assert_array_equal(as_str[key], other[key])
    assert tokenizer.decode(as_str["tokens"], as_str["mask"]) == texts


def test_tokenizer_rejects_bad_input(tokenizer, tmp_path):
    with pytest.raises(TypeError, match="single string"):
        tokenizer("pick up the block")
    with pytest.raises(TypeError, match=r"texts\[1\].*int"):
        tokenizer(["ok", 3])
    with pytest.raises(FileNotFoundError, match="spiece.model"):
        TextTokenizer.from_directory(str(tmp_path))


# ---------------------------------------------------------------- independent numpy reference


def _reference_bucket(relative: int, num_buckets: int, max_distance: int) -> int:
    """T5's bidirectional bucket, written out scalar by scalar."""
    half = num_buckets // 2
    bucket = half if relative > 0 else 0
    distance = abs(relative)
    max_exact = half // 2
    if distance < max_exact:
        return bucket + distance
    scaled = math.log(distance / max_exact) / math.log(max_distance / max_exact)
    return bucket + min(max_exact + int(scaled * (half - max_exact)), half - 1)


def _reference_t5(weights: dict, config: dict, tokens: np.ndarray, mask: np.ndarray):
    """Float64 T5 encoder forward straight from the T5 definition and HF weight names."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    heads, dkv, eps = config["num_heads"], config["d_kv"], config["layer_norm_epsilon"]
    b, length = tokens.shape

    def rms(x, scale):
        return scale * x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps)

    def gelu_tanh(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    table = w["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    bias = np.zeros((heads, length, length))
    for i in range(length):
        for j in range(length):
            bucket = _reference_bucket(
                j - i,
                config["relative_attention_num_buckets"],
                config["relative_attention_max_distance"],
            )
            bias[:, i, j] = table[bucket]
    x = w["shared.weight"][tokens]
    for layer in range(config["num_layers"]):
        p = f"encoder.block.{layer}.layer."
        h = rms(x, w[p + "0.layer_norm.weight"])
        q, k, v = (
            (h @ w[p + f"0.SelfAttention.{n}.weight"].T).reshape(b, length, heads, dkv)
            for n in "qkv"
        )
        logits = np.einsum("bihc,bjhc->bhij", q, k) + bias  # no 1/sqrt(dkv)
        logits = logits - 1e9 * (~mask)[:, None, None, :]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attended = np.einsum("bhij,bjhc->bihc", probs, v).reshape(b, length, heads * dkv)
        x = x + attended @ w[p + "0.SelfAttention.o.weight"].T
        h = rms(x, w[p + "1.layer_norm.weight"])
        ffn = p + "1.DenseReluDense."
        if config["feed_forward_proj"] == "gated-gelu":
            hidden = gelu_tanh(h @ w[ffn + "wi_0.weight"].T) * (h @ w[ffn + "wi_1.weight"].T)
        else:
            hidden = np.maximum(h @ w[ffn + "wi.weight"].T, 0)
        x = x + hidden @ w[ffn + "wo.weight"].T
    return rms(x, w["encoder.final_layer_norm.weight"])


def test_relative_position_buckets_by_hand():
    # 32 buckets, max distance 128: half = 16 per direction, max_exact = 8 exact buckets.
    # keys after the query (+) add 16. |r| >= 8: 8 + int(log(|r|/8) / log(128/8) * 8), <= 15:
    #   |r|=8: 8 + int(0) = 8;  |r|=20: 8 + int(8 * log(2.5)/log(16) = 2.64) = 10;
    #   |r|=200: 8 + int(8 * log(25)/log(16) = 9.29) = 17 -> clipped to 15.
    expected = {0: 0, 1: 17, -1: 1, 7: 23, -7: 7, 8: 24, -8: 8, 20: 26, -20: 10, 200: 31, -200: 15}
    relative = np.array(list(expected))
    got = relative_position_bucket(relative, num_buckets=32, max_distance=128)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, list(expected.values()))
    sweep = np.arange(-300, 301)
    np.testing.assert_array_equal(
        relative_position_bucket(sweep, num_buckets=32, max_distance=128),
        [_reference_bucket(int(r), 32, 128) for r in sweep],
    )


@pytest.mark.parametrize("feed_forward_proj", ["gated-gelu", "relu"])
def test_t5_matches_numpy_reference(tmp_path, feed_forward_proj):
    directory = write_tiny_t5_checkpoint(
        str(tmp_path), feed_forward_proj=feed_forward_proj, num_layers=2, seed=3
    )
    encoder, tokenizer = load_t5_encoder(directory)
    batch = tokenizer(INSTRUCTIONS)
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    weights = safetensors.numpy.load_file(os.path.join(directory, "model.safetensors"))
    expected = _reference_t5(weights, config, batch["tokens"], batch["mask"])
    got = nnx.jit(lambda m, t, k: m(t, k))(encoder, batch["tokens"], batch["mask"])
    assert got.shape == (4, 16, 32) and got.dtype == jnp.float32
    assert np.isfinite(np.asarray(got)).all()  # including the all-padding row
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)


# ------------------------------------------------------------------------ HF checkpoint


def _tiny_config(**overrides) -> T5EncoderConfig:
    fields = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    return T5EncoderConfig(**{**fields, **overrides})


def _rewrite_weights(directory: str, edit) -> None:
    path = os.path.join(directory, "model.safetensors")
    tensors = safetensors.numpy.load_file(path)
    edit(tensors)
    safetensors.numpy.save_file(tensors, path)


def test_save_load_round_trip_single_and_sharded(tmp_path, tiny_dir, batch):
    encoder = T5Encoder(_tiny_config(feed_forward_proj="gated-gelu"), rngs=nnx.Rngs(7))
    expected = encoder(batch["tokens"], batch["mask"])
    spiece = os.path.join(tiny_dir, "spiece.model")
    for name, shard_bytes in (("single", None), ("sharded", 20_000)):
        directory = str(tmp_path / name)
        save_t5_encoder(encoder, spiece, directory, max_shard_bytes=shard_bytes)
        files = sorted(os.listdir(directory))
        if shard_bytes:
            shards = [f for f in files if f.startswith("model-000")]
            assert len(shards) > 1 and "model.safetensors.index.json" in files
            assert all(f.endswith(f"-of-{len(shards):05d}.safetensors") for f in shards)
        else:
            assert "model.safetensors" in files
        loaded, tokenizer = load_t5_encoder(directory, rngs=nnx.Rngs(99))
        assert tokenizer.vocab_size == TextTokenizer(spiece).vocab_size
        np.testing.assert_array_equal(loaded(batch["tokens"], batch["mask"]), expected)
    with pytest.raises(FileExistsError, match="overwrite"):
        save_t5_encoder(encoder, spiece, str(tmp_path / "single"))


def test_loading_accepts_embedding_alias(tmp_path, tiny_dir, batch):
    reference, _ = load_t5_encoder(tiny_dir)
    directory = write_tiny_t5_checkpoint(str(tmp_path))
    _rewrite_weights(
        directory,
        lambda t: t.__setitem__("encoder.embed_tokens.weight", t.pop("shared.weight")),
    )
    aliased, _ = load_t5_encoder(directory)
    np.testing.assert_array_equal(
        aliased(batch["tokens"], batch["mask"]), reference(batch["tokens"], batch["mask"])
    )


def test_missing_wrong_shape_and_unexpected_weights_raise(tmp_path):
    directory = write_tiny_t5_checkpoint(str(tmp_path / "missing"))
    wo = "encoder.block.1.layer.1.DenseReluDense.wo.weight"
    _rewrite_weights(directory, lambda t: t.pop(wo))
    with pytest.raises(KeyError, match=rf"{wo}.*expected shape \[32, 64\]"):
        load_t5_encoder(directory)

    directory = write_tiny_t5_checkpoint(str(tmp_path / "shape"))
    q = "encoder.block.0.layer.0.SelfAttention.q.weight"
    _rewrite_weights(directory, lambda t: t.__setitem__(q, np.zeros((32, 16), np.float32)))
    with pytest.raises(ValueError, match=rf"{q}.*shape \[32, 16\], expected \[32, 32\]"):
        load_t5_encoder(directory)

    directory = write_tiny_t5_checkpoint(str(tmp_path / "extra"))
    extra = "encoder.block.2.layer.0.layer_norm.weight"
    _rewrite_weights(directory, lambda t: t.__setitem__(extra, np.ones((32,), np.float32)))
    with pytest.raises(ValueError, match=extra):
        load_t5_encoder(directory)


def test_config_from_json_defaults_and_errors(tiny_dir, tmp_path):
    with open(os.path.join(tiny_dir, "config.json")) as f:
        raw = json.load(f)
    assert raw["architectures"] == ["T5ForConditionalGeneration"]
    config = T5EncoderConfig.from_json(tiny_dir)
    assert config == T5EncoderConfig.from_json(raw) and config.feed_forward_proj == "gated-gelu"
    minimal = {k: raw[k] for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers")}
    with pytest.raises(ValueError, match=r"missing T5 config fields \['num_heads'\]"):
        T5EncoderConfig.from_json(minimal)
    defaults = T5EncoderConfig.from_json({**minimal, "num_heads": 4, "n_positions": 512})
    assert defaults.feed_forward_proj == "relu"  # T5 v1.0 configs omit it
    assert defaults.relative_attention_max_distance == 128
    with pytest.raises(ValueError, match="model_type 'bert'"):
        T5EncoderConfig.from_json({**raw, "model_type": "bert"})
    with pytest.raises(ValueError, match="feed_forward_proj"):
        T5EncoderConfig.from_json({**raw, "feed_forward_proj": "gated-silu"})
    with pytest.raises(TypeError, match="d_model must be an int"):
        T5EncoderConfig.from_json({**raw, "d_model": 32.0})
    with pytest.raises(TypeError, match="layer_norm_epsilon must be a number"):
        T5EncoderConfig.from_json({**raw, "layer_norm_epsilon": "1e-6"})
    small_vocab = str(tmp_path / "small_vocab")
    write_tiny_t5_checkpoint(small_vocab)
    with open(os.path.join(small_vocab, "config.json"), "w") as f:
        json.dump({**raw, "vocab_size": 8}, f)
    with pytest.raises(ValueError, match="vocab_size is 8"):
        load_t5_encoder(small_vocab)


# ------------------------------------------------------------- masks, dtype, small encoder


def _scramble_padding(batch, seed: int, vocab: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(2, vocab, batch["tokens"].shape)
    return np.where(batch["mask"], batch["tokens"], noise).astype(np.int32)


def test_t5_padding_invariance_dropout_and_bad_inputs(tiny_dir, batch):
    encoder, _ = load_t5_encoder(tiny_dir)
    mask = batch["mask"]
    clean = encoder(batch["tokens"], mask)
    scrambled = encoder(_scramble_padding(batch, 0, 128), mask)
    np.testing.assert_allclose(np.asarray(scrambled)[mask], np.asarray(clean)[mask], atol=1e-6)
    assert not np.allclose(np.asarray(scrambled)[~mask], np.asarray(clean)[~mask])
    assert encoder.config.dropout_rate > 0
    trained = encoder(batch["tokens"], mask, train=True, rng=jax.random.key(1))
    assert not np.allclose(trained, clean)
    # Dropout draws from the key it is given, never from state kept in the module.
    again = encoder(batch["tokens"], mask, train=True, rng=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(again), np.asarray(trained))
    other = encoder(batch["tokens"], mask, train=True, rng=jax.random.key(2))
    assert not np.allclose(other, trained)
    with pytest.raises(ValueError, match="needs an `rng` key"):
        encoder(batch["tokens"], mask, train=True)
    with pytest.raises(ValueError, match=r"tokens must be int\[b, L\]"):
        encoder(batch["tokens"][0], mask[0])
    with pytest.raises(ValueError, match=r"mask must be bool\[4, 16\]"):
        encoder(batch["tokens"], mask[:, :8])


def test_t5_bfloat16_close_to_float32(tiny_dir, batch):
    fp32, _ = load_t5_encoder(tiny_dir)
    bf16, _ = load_t5_encoder(tiny_dir, dtype=jnp.bfloat16)
    params = jax.tree.leaves(nnx.state(bf16, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)
    out = nnx.jit(lambda m, t, k: m(t, k))(bf16, batch["tokens"], batch["mask"])
    assert out.dtype == jnp.bfloat16
    expected = fp32(batch["tokens"], batch["mask"])
    np.testing.assert_allclose(np.asarray(out, np.float32), expected, atol=0.1, rtol=0.05)


def test_small_encoder_shapes_padding_jit_and_grads(batch, tokenizer):
    encoder = SmallTextEncoder(
        tokenizer.vocab_size, width=32, depth=2, num_heads=4, rngs=nnx.Rngs(0)
    )
    mask = batch["mask"]
    forward = nnx.jit(lambda m, t, k: m(t, k))
    out = forward(encoder, batch["tokens"], mask)
    assert out.shape == (4, 16, 32) and np.isfinite(np.asarray(out)).all()
    scrambled = forward(encoder, _scramble_padding(batch, 1, tokenizer.vocab_size), mask)
    np.testing.assert_allclose(np.asarray(scrambled)[mask], np.asarray(out)[mask], atol=1e-5)
    assert forward(encoder, batch["tokens"][:, :8], mask[:, :8]).shape == (4, 8, 32)
    with pytest.raises(ValueError, match="max_length 16"):
        encoder(np.zeros((1, 17), np.int32), np.ones((1, 17), bool))

    def loss(model):
        return jnp.sum(jnp.where(mask[..., None], model(batch["tokens"], mask), 0.0) ** 2)

    grads = nnx.jit(nnx.grad(loss))(encoder)
    embedding_grad = np.asarray(grads["token_embedding"]["embedding"][...])
    used = np.unique(batch["tokens"][mask])
    unused = np.setdiff1d(np.arange(tokenizer.vocab_size), used)  # includes pad id 0
    assert (np.abs(embedding_grad[used]).sum(-1) > 0).all()
    assert (embedding_grad[unused] == 0).all()


def test_small_encoder_bfloat16(batch, tokenizer):
    kwargs = dict(width=32, depth=1, num_heads=4, rngs=nnx.Rngs(0))
    fp32 = SmallTextEncoder(tokenizer.vocab_size, **kwargs)
    kwargs["rngs"] = nnx.Rngs(0)
    bf16 = SmallTextEncoder(tokenizer.vocab_size, dtype=jnp.bfloat16, **kwargs)
    out = bf16(batch["tokens"], batch["mask"])
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(out, np.float32), fp32(batch["tokens"], batch["mask"]), atol=0.1, rtol=0.05
    )


def test_embedded_tokenizer_keeps_unseen_words_whole_and_loses_nothing(tmp_path):
    """Trained on five tasks' instructions, the embedded tokenizer still reads the instructions
    of tasks it never saw word by word (no letter-by-letter spelling), and any text, accents and
    digits included, decodes back exactly (byte fallback)."""
    from octo_like.model.language.vocabulary import WORDS, write_embedded_tokenizer

    seen = ["reach the red goal", "push the puck to the goal", "open the drawer"]
    pieces = write_embedded_tokenizer(str(tmp_path), seen)
    tokenizer = TextTokenizer.from_directory(str(tmp_path), max_length=32)
    assert pieces == tokenizer.vocab_size > len(WORDS)
    processor = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(tmp_path, "spiece.model")
    )
    assert all(len(processor.encode(word)) == 1 for word in WORDS)
    unseen = [
        "press the coffee machine button",
        "put the yellow mug in the microwave",
        "sweep the cube into the bin",
        "hammer the nail into the wall",
    ]
    for text in unseen:
        assert len(processor.encode(text)) == len(text.split()), processor.encode(text, str)
    for text in [*unseen, "Öffne die Tür", "stack 3 blocks!", "zyx qwv"]:
        batch = tokenizer([text])
        assert tokenizer.decode(batch["tokens"], batch["mask"]) == [text]
    # the old instruction-only tokenizer cut this one at "press the coffee " (15 pieces)
    assert tokenizer([unseen[0]])["mask"].sum() == 6  # five words + EOS
