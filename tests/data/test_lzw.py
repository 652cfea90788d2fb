"""The .Z (LZW) decoder: round trips through our encoder (which writes compress's exact format), the real
``compress`` program when it is installed, and clear errors on bad input."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest
from data_testing import lzw_compress, synthetic_text

from tttlm.data.lzw import LZWError, decompress


def _sample(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    return synthetic_text(seed, n).encode() + bytes(rng.randrange(256) for _ in range(n // 4))


@pytest.mark.parametrize("max_bits", [9, 10, 12, 16])
@pytest.mark.parametrize("size", [0, 1, 60, 4000])
def test_round_trip(max_bits: int, size: int) -> None:
    data = _sample(size, seed=size)
    assert decompress(lzw_compress(data, max_bits)) == data


@pytest.mark.parametrize("max_bits", [9, 10])
def test_round_trip_through_clear_codes(max_bits: int) -> None:
    # the dictionary fills many times: every CLEAR resets the width to 9 bits and pads the code group
    data = _sample(6000, seed=3)
    stream = lzw_compress(data, max_bits, clear_when_full=True)
    assert decompress(stream) == data
    assert stream != lzw_compress(data, max_bits)  # the CLEAR path was taken


def test_width_changes_are_exercised() -> None:
    # 16-bit dictionary, long input: widths 9..12 at least, each change with group padding
    data = _sample(20000, seed=5)
    assert decompress(lzw_compress(data, 16)) == data


@pytest.mark.skipif(shutil.which("compress") is None, reason="the compress program (ncompress) is not installed")
@pytest.mark.parametrize("max_bits", [10, 12, 16])
def test_matches_the_compress_program(max_bits: int) -> None:
    data = _sample(30000, seed=max_bits)
    stream = subprocess.run(["compress", "-c", f"-b{max_bits}"], input=data, capture_output=True, check=True).stdout
    assert decompress(stream) == data


def test_bad_input_is_reported() -> None:
    with pytest.raises(LZWError, match="magic bytes 1f 9d"):
        decompress(b"PK\x03\x04")
    with pytest.raises(LZWError, match="maximum code width 20"):
        decompress(b"\x1f\x9d\x94\x00")
    # first code 300 is not a byte: corrupt
    with pytest.raises(LZWError, match="first code"):
        decompress(b"\x1f\x9d\x90" + (300).to_bytes(2, "little"))
    # a code far past the dictionary end
    stream = bytearray(lzw_compress(b"abcabcabc", 16))
    stream[-1] |= 0xF0
    with pytest.raises(LZWError, match="past the dictionary end"):
        decompress(bytes(stream))
