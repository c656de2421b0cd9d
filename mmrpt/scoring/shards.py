"""Which worker and which process scores which shard of the corpus.

The corpus is the splits in order, each cut into shards of ``shard_size`` records; shard g
(counted over all splits) goes to worker g mod W and, among that worker's P processes, to
process (g div W) mod P. A shard's file name depends only on (split, shard_size, index in
its split): the same shard is the same file whoever scores it, the owner of a shard does not
change with P, and the merge reassembles the table in corpus order whatever W and P were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DONE = "done.json"  # beside a worker's shards: what it finished (for the merge)


@dataclass(frozen=True)
class Shard:
    index: int  # g: position in the whole corpus
    split: str
    start: int  # first record of the split in the shard
    stop: int  # one past the last
    name: str  # file name (parquet)


def plan(splits: Sequence[tuple[str, int]], shard_size: int) -> list[Shard]:
    """Every shard of the corpus, in corpus order. ``splits``: (name, record count)."""
    shards: list[Shard] = []
    for split, n in splits:
        for k, start in enumerate(range(0, n, shard_size)):
            name = f"{split}-{shard_size}-{k:05d}.parquet"
            shards.append(Shard(len(shards), split, start, min(start + shard_size, n), name))
    return shards


def worker_of(shard: Shard, num_workers: int) -> int:
    return shard.index % num_workers


def process_of(shard: Shard, num_workers: int, num_processes: int) -> int:
    return (shard.index // num_workers) % num_processes


def share(
    shards: Sequence[Shard], worker: int, num_workers: int, process: int = 0, num_processes: int = 1
) -> list[Shard]:
    """The shards of process ``process`` of ``worker`` (defaults: all of the worker's)."""
    return [
        s
        for s in shards
        if worker_of(s, num_workers) == worker
        and process_of(s, num_workers, num_processes) == process
    ]
