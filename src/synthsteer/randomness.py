"""Named random streams: every random choice of a run derives from (seed, stream, record index).

    SAMPLING   the decoder's per-token noise (its key also hashes the step and the token)
    CONTEXT    SoftSRV's context noise and mixing partner
    NEGATIVES  STEER's draw of K negatives
    SHOTS      the few-shot examples of a hard prompt
    TRAINING   the torch RNG of each training step (LoRA dropout), keyed by step (and rank), so a
               resumed run replays the steps an uninterrupted one takes
    ORDER      the shuffled order in which records cycle through the training examples

Within a run no two streams share a key. A stream's key is `sample_key(seed + stream, index)`, the
derivation the first runs were written with (kept so that their records reproduce): stream s of
seed n therefore coincides with stream 0 of seed n + s, a correlation between *different* runs only.

The hash is lowbias32 on int64 tensors, so every device computes the same bits.
"""

from __future__ import annotations

from enum import IntEnum

import torch

MASK32 = 0xFFFFFFFF


class Stream(IntEnum):
    SAMPLING = 0
    CONTEXT = 1
    NEGATIVES = 2
    SHOTS = 3
    TRAINING = 4
    ORDER = 5
    GIVEN = 6


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) on int64 tensors: the same bits on every device."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def seed_key(seed: int) -> torch.Tensor:
    """A seed folded to 32 bits with every bit counting: seeds below 2**32 hash as the first runs
    did (their records reproduce), and the high word of a larger seed is mixed in, so that seed
    2**32 is not seed 0."""
    key = mix32(torch.tensor(seed & MASK32))
    high = seed >> 32
    return key if not high else mix32(key ^ mix32(torch.tensor(high)) ^ 0x5BD1E995)


def sample_key(seed: int, index: int) -> int:
    """The random key of record `index` in a run seeded with `seed` (the sampling stream)."""
    return int(mix32(seed_key(seed) ^ torch.tensor(index & MASK32)))


def stream_key(seed: int, stream: Stream, index: int) -> int:
    """The key of record `index` in `stream`."""
    return sample_key(seed + int(stream), index)


def generator(seed: int, stream: Stream, index: int) -> torch.Generator:
    """A CPU generator for record `index`'s draws in `stream`."""
    return torch.Generator().manual_seed(stream_key(seed, stream, index))


def shuffled_cycle(seed: int, n: int) -> list[int]:
    """The order in which records cycle through `n` examples (record i takes example order[i % n]):
    a permutation drawn from the seed, so that the first records of a run are a uniform sample of
    the examples even when the file is sorted (Jigsaw's train split lists every non-toxic comment
    first), while every example still seeds one record in each n."""
    return torch.randperm(n, generator=generator(seed, Stream.ORDER, 0)).tolist()
