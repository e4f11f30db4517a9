"""The negative pool of STEER: real training examples first, every written synthetic sample after.

Each sample draws its own K negatives, seeded by its index, from the pool as it stood when its
batch started (the real examples plus every record of earlier batches), so reruns and resumes see
the same pools. `uniform` draws without replacement as in the paper; `nearest` (ours) takes the K
examples closest to the sample's context in embedding space.

The negative prompt is the drawn examples in draw order, each followed by the separator, up to the
last whole example that fits in `max_tokens`: the prompt always ends at a separator, so generation
never continues a cut example, and provenance lists exactly the examples used. (Only when not even
the first example fits is it cut, so that the branch still sees something of the pool.)

With `--negative-share block`, every sample of a decoding block uses the draw of the block's first
index: one negative prompt per block, prefilled once for all its rows.
"""

from __future__ import annotations

import torch

from ..randomness import Stream, generator


class NegativePool:
    def __init__(self, ids: list[str], texts: list[str], embeddings: torch.Tensor | None = None):
        self.ids, self.texts = list(ids), list(texts)
        self.embeddings = None if embeddings is None else torch.nn.functional.normalize(embeddings.float(), dim=-1)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: list[str], texts: list[str], embeddings: torch.Tensor | None = None) -> None:
        self.ids += ids
        self.texts += texts
        if self.embeddings is not None:
            new = torch.nn.functional.normalize(embeddings.float().to(self.embeddings.device), dim=-1)
            self.embeddings = torch.cat([self.embeddings, new])

    def draw(self, k: int, seed: int, index: int, context: torch.Tensor | None = None) -> list[int]:
        """Pool positions of sample `index`'s K negatives."""
        k = min(k, len(self))
        if context is None:
            g = generator(seed, Stream.NEGATIVES, index)
            return torch.randperm(len(self), generator=g)[:k].tolist()
        sims = self.embeddings @ torch.nn.functional.normalize(context.float().to(self.embeddings.device), dim=-1)
        return torch.topk(sims, k).indices.tolist()


def negative_prompt(tokenizer, texts: list[str], separator: str, max_tokens: int) -> tuple[list[int], int]:
    """Token ids of the negative prompt within `max_tokens`, and how many of `texts` it holds."""
    ids: list[int] = []
    for used, text in enumerate(texts):
        piece = tokenizer.encode(text + separator, add_special_tokens=False)
        if len(ids) + len(piece) > max_tokens:
            if used == 0:
                return piece[:max_tokens], 1
            return ids, used
        ids += piece
    return ids, len(texts)
