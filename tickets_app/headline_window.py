"""The part of a ticket's text that PostgreSQL's `ts_headline` needs for a one-word search (pure).

ts_headline parses the whole text it is given, and parsing was the cost of a page of snippets: 5-9 ms for
20 tickets of the issue-16 corpus, most of a rare word's search on PostgreSQL. With `MaxFragments=1` and a
query of one lexeme, every occurrence of the word is a cover of one word, all tie, and the first one wins;
the fragment then stretches at most `(MaxWords - 1) // 2` words before it and up to `MaxWords` words after.
So a window holding the first occurrence, enough words on either side, and nothing the parser reads
differently gives the same headline as the whole text.

Where the first occurrence is comes from the stored tsvector, not from parsing: its position, weight (the
part: subject, public thread, internal notes) and the part's first position. Within a part, a position
counts the tokens the configuration maps (words, numbers, hosts, ... and stop words, which count but are
not stored; `parsetext` in PostgreSQL's ts_parse.c). This module counts nothing the way PostgreSQL does; it
bounds the count of each whitespace-free chunk from above (`chunk_bounds`: a chunk of one run of letters or
digits is at most one token, a compound such as `e-mail` or a URL at most two per run) and from below (at
least one, unless the chunk may be a tag, an entity, a protocol or a word too long to index), and cuts
only where the bounds prove the first occurrence lies inside with the words it needs. The parser's tokens
never cross whitespace except inside a tag (`<a href="x y">`), so a text holding `<` is taken whole.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

# ts_headline's options (tickets_app.search.PostgresFtsIndex.headline_options): MaxWords=12.
MAX_WORDS = 12
# Mapped tokens to keep before the occurrence: at most two tokens per headline word (a compound and its
# parts, a URL and its host and path), so 12 tokens hold the 5 words the fragment may stretch back.
TOKENS_BEFORE = 2 * (MAX_WORDS // 2)
# Chunks to keep after it: each chunk with a token holds a headline word, and the fragment reads at most 11.
CHUNKS_AFTER = MAX_WORDS
# Positions stop counting here (MAXENTRYPOS - 1 in PostgreSQL's tsvector): past it a position says nowhere.
LAST_POSITION = 16383
# PostgreSQL skips words of 2047 bytes or more (MAXSTRLEN); a chunk of fewer than 2047 / 4 characters is
# shorter than that in any encoding.
LONGEST_SAFE_CHUNK = 2047 // 4


def chunk_bounds(chunk: str) -> tuple[int, int]:
    """(at most, at least) how many tokens PostgreSQL's default parser makes of a chunk without whitespace
    that the text search configuration maps (and so counts as positions)."""
    if chunk.isascii() and chunk.isalnum():
        return 1, int(len(chunk) < LONGEST_SAFE_CHUNK)
    runs, in_run, has_ascii_alnum = 0, False, False
    for character in chunk:
        if not character.isascii():  # each one a run of its own: locales disagree on which are letters
            runs, in_run = runs + 1, False
        elif character.isalnum():
            runs, in_run, has_ascii_alnum = runs + (not in_run), True, True
        else:
            in_run = False
    # A tag, an entity or a protocol is a token no configuration maps; a word too long is skipped.
    unmapped = "<" in chunk or "&" in chunk or "://" in chunk or len(chunk) >= LONGEST_SAFE_CHUNK
    return (runs if runs <= 1 else 2 * runs), int(has_ascii_alnum and not unmapped)


def headline_window(parts: Sequence[str], part: int, index: int | None) -> tuple[int, int]:
    """(start, end) in `"\\n".join(parts)` (what the headline is made of) of a window whose headline is the
    whole text's, for a one-lexeme query whose first occurrence is in `parts[part]`, the `index`-th
    mapped token of that part (1-based; None: somewhere in that part, none before it)."""
    text = "\n".join(parts)
    if "<" in text or (index is not None and index >= LAST_POSITION):
        return 0, len(text)
    part_start = sum(len(p) + 1 for p in parts[:part])
    if index is None:
        return _tail_start(text[:part_start]), len(text)
    rest = text[part_start:]  # the occurrence's part and what follows it
    needed = index + CHUNKS_AFTER
    pieces = rest.split(maxsplit=needed)  # the chunks a window can need, then the rest unsplit
    most, least = _bounds(pieces[:needed])
    if sum(least) < needed and len(pieces) > needed:  # chunks without a token: look further
        most, least = _bounds(rest.split())
    allowed = index - 1 - TOKENS_BEFORE
    if allowed >= 0:
        # The last chunk before which at most `allowed` tokens come: none is the occurrence, and
        # TOKENS_BEFORE come between.
        start = part_start + _offset_of_chunk(rest, bisect.bisect_right(list(itertools.accumulate(most)), allowed))
    else:
        start = _tail_start(text[:part_start])
    # After the chunks that surely hold the index-th token and CHUNKS_AFTER chunks with a token after its
    # chunk (at most `index` chunks with a token end at it).
    held = list(itertools.accumulate(least))
    after = bisect.bisect_left(held, needed)
    end = part_start + _offset_of_chunk(rest, after + 1) if after < len(held) else len(text)
    return start, end


def _bounds(chunks: list[str]) -> tuple[list[int], list[int]]:
    """chunk_bounds of each chunk, as two lists; at C speed when every chunk is one run of ASCII letters
    and digits (prose without punctuation)."""
    joined = "".join(chunks)
    if joined.isascii() and joined.isalnum() and max(map(len, chunks), default=0) < LONGEST_SAFE_CHUNK:
        return [1] * len(chunks), [1] * len(chunks)
    bounds = [chunk_bounds(chunk) for chunk in chunks]
    return [most for most, _ in bounds], [least for _, least in bounds]


def _tail_start(before: str) -> int:
    """Where in the text before the occurrence's part a window may start: the start of the last chunks
    that hold at least MAX_WORDS // 2 tokens (the words the fragment may stretch back), or the start."""
    chunks = before.split()
    held = 0
    for taken, chunk in enumerate(reversed(chunks), start=1):
        held += chunk_bounds(chunk)[1]
        if held >= MAX_WORDS // 2:
            return _offset_of_chunk(before, len(chunks) - taken)
    return 0


def _offset_of_chunk(text: str, chunks: int) -> int:
    """The offset in `text` of its chunk number `chunks` (0-based; the end when it has no more)."""
    if chunks == 0:
        return 0
    pieces = text.split(maxsplit=chunks)
    return len(text) - len(pieces[chunks]) if len(pieces) > chunks else len(text)
