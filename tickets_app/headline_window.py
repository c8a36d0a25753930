"""The part of a ticket's text that PostgreSQL's `ts_headline` needs for a one-word search, cut by the
database itself from marks stored with the text (pure here; the SQL half is `WINDOW_FUNCTION`).

ts_headline parses the whole text it is given, and parsing was the cost of a page of snippets: 5-9 ms for
20 tickets of the issue-16 corpus, most of a rare word's search on PostgreSQL. With `MaxFragments=1` and a
query of one lexeme, every occurrence of the word is a cover of one word, all tie, and the first one wins;
the fragment then stretches at most `(MaxWords - 1) // 2` words before it and up to `MaxWords` words after.
So a window holding the first occurrence, enough words on either side, and nothing the parser reads
differently gives the same headline as the whole text; so does any larger window cut at whitespace.

Where the first occurrence is comes from the stored tsvector, not from parsing: its position, weight (the
part: subject, public thread, internal notes) and the part's first position. Within a part, a position
counts the tokens the configuration maps (words, numbers, hosts, ... and stop words, which count but are
not stored; `parsetext` in PostgreSQL's ts_parse.c). This module counts nothing the way PostgreSQL does; it
bounds the count of each whitespace-free chunk from above (`chunk_bounds`: a chunk of one run of letters or
digits is at most one token, a compound such as `e-mail` or a URL at most two per run) and from below (at
least one, unless the chunk may be a tag, an entity, a protocol or a word too long to index). The parser's
tokens never cross whitespace except inside a tag (`<a href="x y">`), so a text holding `<` is taken whole.

`window_marks` records, when a ticket is indexed, every CHECKPOINT_CHUNKS-th chunk of the subject and the
public thread with its offset and the bounds of the tokens before it, and where each part's last
MAX_WORDS // 2 tokens surely begin. At search time `ticket_search_window` (WINDOW_FUNCTION, installed by
tickets_0008) starts at the last checkpoint that surely comes TOKENS_BEFORE tokens before the occurrence and
ends at the first that surely comes CHUNKS_AFTER tokens after it: a window at most 2 x CHECKPOINT_CHUNKS
chunks wider than the narrowest one, with no text sent to Python. Marks are trusted only while the texts
hash to what they were computed from (`window_marks_md5`), so a row written without them (a replica of an
older release) is headlined whole.
"""

from __future__ import annotations

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
# A mark every this many chunks: windows 2 x 8 chunks wider at most, about 100 integers for a ticket of
# 300 words.
CHECKPOINT_CHUNKS = 8


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


def window_marks(subject: str, public: str | None) -> list[int]:
    """The marks of a ticket's subject and public thread, one part after the other (the database puts the
    subject's and the public thread's last positions before them). A part's marks: where its last
    MAX_WORDS // 2 tokens surely begin (-1: it may hold fewer), the number of checkpoints n (chunks 0,
    CHECKPOINT_CHUNKS, ...), then n offsets in the part (0 for the first, as the part's start), n counts of
    the most tokens before each, and n of the fewest: sorted arrays, which `width_bucket` searches."""
    marks = _part_marks(subject)
    if public is not None:
        marks += _part_marks(public)
    return marks


def _part_marks(part: str) -> list[int]:
    chunks = part.split()
    most, least = _bounds(chunks)
    offsets, position = [], 0
    for chunk in chunks:  # only whitespace lies between one chunk and the next
        position = part.find(chunk, position)
        offsets.append(position)
        position += len(chunk)
    starts, mosts, leasts = [], [], []
    most_before = least_before = 0
    for index, (at_most, at_least) in enumerate(zip(most, least, strict=True)):
        if least_before > LAST_POSITION + CHUNKS_AFTER:  # no window ends later: positions stop counting
            break
        if index % CHECKPOINT_CHUNKS == 0:
            starts.append(offsets[index] if index else 0)
            mosts.append(most_before)
            leasts.append(least_before)
        most_before += at_most
        least_before += at_least
    return [_tail(least, offsets), len(starts), *starts, *mosts, *leasts]


def _tail(least: Sequence[int], offsets: Sequence[int]) -> int:
    """The offset of the last chunks that surely hold MAX_WORDS // 2 tokens (the words a fragment may
    stretch back into this part from the next), or -1."""
    held = 0
    for index in range(len(least) - 1, -1, -1):
        held += least[index]
        if held >= MAX_WORDS // 2:
            return offsets[index] if index else 0
    return -1


def _bounds(chunks: list[str]) -> tuple[list[int], list[int]]:
    """chunk_bounds of each chunk, as two lists; at C speed when every chunk is one run of ASCII letters
    and digits (prose without punctuation)."""
    joined = "".join(chunks)
    if joined.isascii() and joined.isalnum() and max(map(len, chunks), default=0) < LONGEST_SAFE_CHUNK:
        return [1] * len(chunks), [1] * len(chunks)
    bounds = [chunk_bounds(chunk) for chunk in chunks]
    return [most for most, _ in bounds], [least for _, least in bounds]


# The window of `shown` (the text to headline: "\n".join of the parts) for a one-word search whose first
# occurrence is at `first_pos` of the stored vector; the whole text when the marks are missing (or stale:
# the caller passes NULL), the occurrence is past LAST_POSITION, or the text holds a `<`. `marks`: the
# subject's and the public thread's last positions, then window_marks.
WINDOW_FUNCTION = f"""
CREATE OR REPLACE FUNCTION ticket_search_window(
    shown text, subject text, public text, marks integer[], first_pos integer
) RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $window$
DECLARE
  public_at integer;  -- where the public thread's marks begin (the subject's begin at 3)
  base integer;       -- where the marks of the occurrence's part begin
  part_start integer; -- its first character in shown, counted from 0
  position_in_part integer;
  checkpoints integer;
  found integer;
  window_start integer := 0;
BEGIN
  IF marks IS NULL OR first_pos IS NULL OR first_pos >= {LAST_POSITION} OR strpos(shown, '<') > 0 THEN
    RETURN shown;
  END IF;
  public_at := 5 + 3 * marks[4];
  IF first_pos <= marks[1] THEN
    base := 3; part_start := 0; position_in_part := first_pos;
  ELSIF first_pos <= marks[2] THEN
    base := public_at; part_start := char_length(subject) + 1; position_in_part := first_pos - marks[1];
  ELSIF public IS NOT NULL THEN  -- in the notes: from the public thread's tail to the end
    RETURN CASE WHEN marks[public_at] >= 0
      THEN substr(shown, char_length(subject) + 2 + marks[public_at]) ELSE shown END;
  ELSE
    RETURN CASE WHEN marks[3] >= 0 THEN substr(shown, 1 + marks[3]) ELSE shown END;
  END IF;
  checkpoints := marks[base + 1];
  IF checkpoints = 0 THEN
    RETURN shown;
  END IF;
  IF position_in_part - 1 - {TOKENS_BEFORE} >= 0 THEN
    -- the last checkpoint with at most that many tokens before it (the first has none)
    found := width_bucket(position_in_part - 1 - {TOKENS_BEFORE},
                          marks[base + 2 + checkpoints : base + 1 + 2 * checkpoints]);
    window_start := part_start + marks[base + 1 + found];
  ELSIF base <> 3 AND marks[3] >= 0 THEN  -- near the thread's start: from the subject's tail
    window_start := marks[3];
  END IF;
  -- the first checkpoint with at least CHUNKS_AFTER tokens past the occurrence before it
  found := 1 + width_bucket(position_in_part + {CHUNKS_AFTER} - 1,
                            marks[base + 2 + 2 * checkpoints : base + 1 + 3 * checkpoints]);
  IF found <= checkpoints THEN
    RETURN substr(shown, window_start + 1, part_start + marks[base + 1 + found] - window_start);
  END IF;
  RETURN substr(shown, window_start + 1);
END $window$
"""
