"""Training data: read the dataset, tokenise with the chat template, order and batch it.

The dataset is a curated one or a file in any layout curation reads: rows are read and understood by the
curation loader (`curate.loaders`), the one reader of rows, so a raw public file trains as it curates.

Loss is computed on assistant tokens only: every other label is IGNORE. With packing, the samples of a
micro batch are concatenated into one row whose position ids restart at 0 for each sample; the model then
attends within each sample only (FlashAttention varlen, or a block-diagonal mask with sdpa when
use_cache=False) and no compute is spent on padding.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import torch

from ..api import common as reasons
from ..curate.loaders import SOLUTION_KEYS, open_location, read_conversation
from ..curate.records import RowError, StageReport
from ..errors import WorkloadError

log = logging.getLogger("reasonops.train")

IGNORE = -100
DATA_FILES = ("data.jsonl", "data.parquet")


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]  # IGNORE outside assistant turns


@dataclass
class DataStats:
    rows: int = 0
    kept: int = 0
    overlong_dropped: int = 0
    truncated: int = 0
    tokens: int = 0
    label_tokens: int = 0
    lengths: list[int] = field(default_factory=list, repr=False)
    unusable: StageReport = field(default_factory=lambda: StageReport("rows", "train"), repr=False)  # why rows were unusable

    @property
    def bad(self) -> int:
        """Rows that hold no conversation with a non-empty assistant turn, or are malformed."""
        return self.unusable.dropped

    @property
    def dropped_for_length(self) -> int:
        return self.overlong_dropped + self.truncated


# ----------------------------------------------------------------------------------------- reading


def read_rows(location: str) -> list[Any]:
    """Rows of a dataset through the curation loader: a curated directory's data.jsonl (or data.parquet), or
    any file or directory of .jsonl, .json or .parquet files that curation reads; local path or fsspec URI.
    A row that cannot be parsed comes as a RowError in its place (counted by `prepare_samples`)."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(location)
        if fs.isdir(path):
            curated = [name for name in DATA_FILES if fs.exists(f"{path.rstrip('/')}/{name}")]
            if curated and not fs.exists(f"{path.rstrip('/')}/_COMPLETE"):
                log.warning("dataset %s has no _COMPLETE marker: it may be partially written", location)
            if curated:
                location = f"{location.rstrip('/')}/{curated[0]}"
        _, rows = open_location("dataset", location)
        return list(rows)
    except WorkloadError as exc:
        raise WorkloadError(reasons.REASON_DATASET_UNREADABLE, f"cannot read dataset {location}: {exc.message}") from exc
    except Exception as exc:  # permissions, network, corrupt parquet: all mean the data cannot be read
        raise WorkloadError(reasons.REASON_DATASET_UNREADABLE, f"cannot read dataset {location}: {type(exc).__name__}: {exc}") from exc


def to_messages(row: Any, system_prompt: Optional[str]) -> list[dict[str, str]]:
    """The row's conversation (any layout curation reads) with its own system prompt, else `system_prompt`
    (none when empty); RowError(reason, detail) when it has no non-empty assistant turn or is malformed."""
    conversation = read_conversation(row)
    if not any(role == "assistant" and text.strip() for role, text in conversation.turns):
        raise RowError("no-assistant-turn", "the row has no non-empty answer to learn: looked for an assistant turn in"
                       f" conversations or messages, or a chain in {', '.join(SOLUTION_KEYS)}")
    return conversation.messages(system_prompt)


# ------------------------------------------------------------------------------------- tokenising


def _has_generation_markers(tokenizer: Any) -> bool:
    template = tokenizer.chat_template or ""
    return "{% generation %}" in template or "{%- generation %}" in template


def tokenize_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> Sample:
    """Token ids and labels (assistant tokens only) of one conversation."""
    if _has_generation_markers(tokenizer):
        enc = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = list(enc["input_ids"])
        mask = list(enc["assistant_masks"])
        return Sample(ids, [t if m else IGNORE for t, m in zip(ids, mask)])
    return _tokenize_by_prefixes(tokenizer, messages)


def _tokenize_by_prefixes(tokenizer: Any, messages: list[dict[str, str]]) -> Sample:
    """Assistant spans from rendering the turns before each assistant turn, mapped to tokens by offsets.

    Works for templates without {% generation %} markers as long as rendering is prefix-stable (earlier
    turns render the same whatever follows), which we check rather than assume.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise WorkloadError(reasons.REASON_INVALID_SPEC, "locating assistant tokens needs a fast tokenizer (offsets) or a chat "
                            "template with {% generation %} markers (set spec.chatTemplate)")

    def render(turns: list[dict[str, str]], prompt: bool) -> str:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=prompt)

    text = render(messages, False)
    spans = []
    for i, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        start, end = len(render(messages[:i], True)), len(render(messages[: i + 1], False))
        if not (text.startswith(render(messages[:i], True)) and text.startswith(render(messages[: i + 1], False))):
            raise WorkloadError(
                reasons.REASON_INVALID_SPEC,
                "the chat template does not render conversations prefix-stably, so assistant tokens cannot be "
                "located; set spec.chatTemplate to a template with {% generation %} markers",
            )
        # Whitespace after the turn's end token is the template's separator, not something to learn.
        spans.append((start, start + len(text[start:end].rstrip())))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [
        tok if any(s <= off[0] < e for s, e in spans) else IGNORE for tok, off in zip(ids, enc["offset_mapping"])
    ]
    return Sample(ids, labels)


def prepare_samples(
    tokenizer: Any,
    rows: Iterable[Any],
    *,
    max_length: int,
    overlong: str,
    system_prompt: Optional[str],
) -> tuple[list[Sample], DataStats]:
    """Tokenise every row; drop bad rows, drop or truncate over-long ones. Raises EmptyDataset if none is left."""
    stats = DataStats()
    samples: list[Sample] = []
    for number, row in enumerate(rows):
        stats.rows += 1
        stats.unusable.input += 1
        try:
            sample = tokenize_conversation(tokenizer, to_messages(row, system_prompt))
        except RowError as exc:
            stats.unusable.drop(f"row {number}", *exc.args)
            continue
        if not any(label != IGNORE for label in sample.labels[1:]):
            stats.unusable.drop(f"row {number}", "no-assistant-tokens", "the chat template left no assistant token")
            continue
        if len(sample.input_ids) > max_length:
            if overlong == "drop":
                stats.overlong_dropped += 1
                continue
            sample = Sample(sample.input_ids[:max_length], sample.labels[:max_length])
            if not any(label != IGNORE for label in sample.labels[1:]):
                stats.overlong_dropped += 1  # the cut removed every assistant token
                continue
            stats.truncated += 1
        samples.append(sample)
        stats.tokens += len(sample.input_ids)
        stats.label_tokens += sum(label != IGNORE for label in sample.labels[1:])
        stats.lengths.append(len(sample.input_ids))
    stats.kept = len(samples)
    if not samples:
        raise WorkloadError(
            reasons.REASON_EMPTY_DATASET,
            f"no trainable samples among {stats.rows} rows: {stats.bad} unusable"
            f"{' (' + '; '.join(map(stats.unusable.explain, stats.unusable.reasons)) + ')' if stats.bad else ''}, "
            f"{stats.overlong_dropped} over maxLength {max_length} tokens (overlong: {overlong})",
        )
    return samples, stats


# ---------------------------------------------------------------------------------- order, batches


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
    return math.ceil(num_samples / global_batch)


def epoch_order(num_samples: int, global_batch: int, seed: int, epoch: int) -> list[int]:
    """Sample indices of one epoch: a permutation seeded by seed+epoch, wrapped around to fill the last step.

    Depends only on its arguments, so a resumed run replays the same order and can skip consumed steps.
    """
    generator = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(num_samples, generator=generator).tolist()
    total = steps_per_epoch(num_samples, global_batch) * global_batch
    return list(itertools.islice(itertools.cycle(perm), total))


def rank_micro_batches(
    order: list[int], step_in_epoch: int, global_batch: int, rank: int, world: int, micro: int
) -> list[list[int]]:
    """This rank's micro batches (lists of sample indices) of one optimizer step."""
    step = order[step_in_epoch * global_batch : (step_in_epoch + 1) * global_batch]
    mine = step[rank::world]
    return [mine[i : i + micro] for i in range(0, len(mine), micro)]


def collate(samples: list[Sample], *, packing: bool, pad_id: int) -> dict[str, torch.Tensor]:
    """Model inputs of one micro batch: one packed row, or right-padded rows with an attention mask."""
    if packing:
        ids = [t for s in samples for t in s.input_ids]
        # The first token of each sample never is a target: no prediction across sample boundaries.
        labels = [IGNORE if i == 0 else t for s in samples for i, t in enumerate(s.labels)]
        positions = [i for s in samples for i in range(len(s.input_ids))]
        return {
            "input_ids": torch.tensor([ids]),
            "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions]),
        }
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id)
    labels = torch.full((len(samples), width), IGNORE)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s.input_ids)
        ids[row, :n] = torch.tensor(s.input_ids)
        labels[row, :n] = torch.tensor(s.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def target_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that contribute to the loss (labels are shifted by one inside the model)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
