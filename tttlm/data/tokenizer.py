"""Tokenizers: a byte-level BPE trained locally with ``tokenizers``, or any locally saved transformers tokenizer.

The trained tokenizer is saved in transformers' format (``tokenizer.json`` + ``tokenizer_config.json``), so
``AutoTokenizer.from_pretrained(dir)`` loads it without network. Byte-level means every UTF-8 text is encodable
(no unknown token) and decoding gives the text back exactly. One special token, ``<|endoftext|>``, separates
documents when they are packed.

A tokenizer's *fingerprint* (sha256 over its vocabulary and merges) is recorded with packed data, so data packed
with one tokenizer is never read with another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

# 4096 suits the tiny models (the paper presets use 32000; pass --vocab-size 32000 to match them)
DEFAULT_VOCAB_SIZE = 4096
END_OF_TEXT = "<|endoftext|>"
MIN_VOCAB_SIZE = 257  # 256 byte symbols + the end-of-text token


def train_tokenizer(
    texts: Iterable[str], out_dir: Path | str, *, vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` tokens (``<|endoftext|>`` included) on ``texts``; save to ``out_dir``.

    Deterministic for the same texts in the same order. Returns the tokenizer as loaded back by transformers.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be an integer >= {MIN_VOCAB_SIZE} (256 bytes + {END_OF_TEXT}); got {vocab_size!r}"
        )
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False: the text is encoded exactly as given, so decode(encode(text)) == text
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=None
    )
    out_dir = Path(out_dir).expanduser()
    wrapped.save_pretrained(out_dir)
    # transformers 5 records its own class name, which 4.x cannot import; this one loads under both
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return load_tokenizer(out_dir)


def load_tokenizer(path: Path | str) -> PreTrainedTokenizerBase:
    """A locally saved transformers tokenizer (never downloaded: ``local_files_only``)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {path} does not exist; train one with tttlm data prepare, or pass a directory "
            "written by a transformers tokenizer's save_pretrained"
        )
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load a transformers tokenizer from {path}: {error}") from None


def end_of_text_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id that separates documents: the tokenizer's EOS token (else its SEP token)."""
    for token_id in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError(
        f"tokenizer {type(tokenizer).__name__} has no eos_token (nor sep_token) to separate documents; "
        f"set one (tokenizer.add_special_tokens({{'eos_token': '{END_OF_TEXT}'}})) and save it again"
    )


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 over the vocabulary (token -> id, added tokens included) and, for BPE models, the merges."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    payload: dict[str, object] = {"vocab": vocab}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        model = json.loads(backend.to_str()).get("model", {})
        if "merges" in model:
            payload["merges"] = model["merges"]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()
