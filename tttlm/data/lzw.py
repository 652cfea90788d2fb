"""A decoder for Unix ``compress`` (LZW, ``.Z``) streams.

The Debian package ``bible-kjv-text`` stores the King James Bible as a sequence of ``.Z`` blocks; Python's standard
library reads gzip, bzip2 and xz but not ``.Z``, so this small decoder is ours. It follows the format written by
``compress``/``ncompress``: a 3-byte header (``1f 9d`` and a flags byte: maximum code width in the low 5 bits, block
mode in bit 7), then little-endian variable-width codes starting at 9 bits. Two quirks of the encoder matter:

* codes are written in groups of 8 (``n_bits`` bytes); when the code width grows, or on a CLEAR code (256, block
  mode only), the rest of the current group is padding and is skipped;
* the decoder's dictionary lags one entry behind the encoder's, so a code may name the entry being defined (the
  "KwKwK" case: previous string + its own first byte).
"""

from __future__ import annotations

MAGIC = b"\x1f\x9d"
_CLEAR = 256
_INIT_BITS = 9


class LZWError(ValueError):
    """The input is not a valid ``compress`` stream."""


def _align(position: int, group_start: int, n_bits: int) -> int:
    # The encoder pads the current group of 8 codes to its full n_bits bytes before changing the code width.
    group_bits = n_bits * 8
    used = position - group_start
    return group_start + -(-used // group_bits) * group_bits


def decompress(data: bytes) -> bytes:
    """Decode one ``.Z`` stream (header included) and return the original bytes.

    Raises ``LZWError`` when the header is missing, the maximum code width is outside 9..16, or a code refers to a
    dictionary entry that does not exist yet (a corrupt or truncated stream).
    """
    if len(data) < 3 or data[:2] != MAGIC:
        raise LZWError(f"not a compress (.Z) stream: expected the magic bytes 1f 9d, got {data[:2].hex() or 'nothing'}")
    flags = data[2]
    max_bits = flags & 0x1F
    block_mode = bool(flags & 0x80)
    if not _INIT_BITS <= max_bits <= 16:
        raise LZWError(f"unsupported maximum code width {max_bits} bits in the .Z header (expected 9..16)")
    payload = data[3:]
    total_bits = len(payload) * 8
    max_entries = 1 << max_bits

    # the dictionary as a list of byte strings: fast enough for a few MB, and simple
    table: list[bytes] = [bytes([i]) for i in range(256)]
    if block_mode:
        table.append(b"")  # 256 is CLEAR, never a string
    n_bits = _INIT_BITS
    position = 0
    group_start = 0
    previous: bytes | None = None
    out = bytearray()
    while position + n_bits <= total_bits:
        if len(table) > (1 << n_bits) - 1 and n_bits < max_bits:
            position = _align(position, group_start, n_bits)
            group_start = position
            n_bits += 1
            if position + n_bits > total_bits:
                break
        byte = position >> 3
        window = int.from_bytes(payload[byte : byte + 3], "little")
        code = (window >> (position & 7)) & ((1 << n_bits) - 1)
        position += n_bits

        if block_mode and code == _CLEAR:
            position = _align(position, group_start, n_bits)
            group_start = position
            del table[257:]
            n_bits = _INIT_BITS
            previous = None
            continue
        if previous is None:
            if code >= 256:
                raise LZWError(f"corrupt .Z stream: the first code after a reset must be a byte, got {code}")
            previous = table[code]
            out += previous
            continue
        if code < len(table):
            entry = table[code]
        elif code == len(table):
            entry = previous + previous[:1]
        else:
            raise LZWError(f"corrupt .Z stream: code {code} at bit {position - n_bits} is past the dictionary end")
        out += entry
        if len(table) < max_entries:
            table.append(previous + entry[:1])
        previous = entry
    return bytes(out)
