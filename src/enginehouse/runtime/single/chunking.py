"""How to split a batch of rows into padded forwards (pure; unit-tested).

A forward costs about ``overhead + rows × longest row`` token-steps: every row is padded to the
longest one in its forward, and each forward has a fixed cost of its own. Rows sorted by length
and cut into contiguous chunks can waste little padding; ``plan_chunks`` picks the cut points
that minimise that cost (dynamic programming over the sorted rows), within the batch bounds.

sentence-transformers gets the same effect by sorting a whole ``encode`` call by length; a server
cannot wait for all its requests, so it does the best it can with each batch it collects.
"""

from __future__ import annotations


def plan_chunks(lengths: list[int], *, max_rows: int, max_tokens: int, overhead_tokens: float) -> list[int]:
    """The sizes of consecutive chunks for rows of ``lengths`` sorted longest first.

    A chunk holds at most ``max_rows`` rows and ``max_tokens`` padded tokens (a single row longer
    than that still gets a chunk of its own).
    """
    n = len(lengths)
    best = [0.0] + [float("inf")] * n  # best[k]: cheapest plan for the first k rows
    cut = [0] * (n + 1)  # cut[k]: where the last chunk of that plan starts
    for end in range(1, n + 1):
        for start in range(end - 1, max(0, end - max_rows) - 1, -1):
            rows, longest = end - start, lengths[start]
            if rows > 1 and rows * longest > max_tokens:
                break  # starting earlier only adds rows and length
            cost = best[start] + overhead_tokens + rows * longest
            if cost < best[end]:
                best[end], cut[end] = cost, start
    sizes: list[int] = []
    end = n
    while end > 0:
        sizes.append(end - cut[end])
        end = cut[end]
    return sizes[::-1]
