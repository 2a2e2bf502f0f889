"""Training data: assistant-only labels, system prompt, length handling, bad input, order and batches."""

from __future__ import annotations


import pytest

from reasonops.errors import WorkloadError
from reasonops.tinymodel import CHAT_TEMPLATE, build_tokenizer
from reasonops.train.data import (
    IGNORE,
    collate,
    epoch_order,
    prepare_samples,
    rank_micro_batches,
    read_rows,
    to_messages,
    tokenize_conversation,
)

from train_support import arithmetic_rows, write_dataset

PLAIN_TEMPLATE = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5, so \\boxed{5}."},
    {"role": "user", "content": "And 12 + 7?"},
    {"role": "assistant", "content": "Therefore 19."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def plain_tokenizer():
    tok = build_tokenizer()
    tok.chat_template = PLAIN_TEMPLATE
    return tok


def labelled_text(tokenizer, sample) -> list[str]:
    """The labelled token runs, decoded."""
    runs, current = [], []
    for label in sample.labels:
        if label == IGNORE:
            if current:
                runs.append(tokenizer.decode(current))
            current = []
        else:
            current.append(label)
    if current:
        runs.append(tokenizer.decode(current))
    return runs


@pytest.mark.parametrize("which", ["generation_markers", "prefix_rendering"])
def test_loss_only_on_assistant_turns(which, tokenizer, plain_tokenizer):
    tok = tokenizer if which == "generation_markers" else plain_tokenizer
    sample = tokenize_conversation(tok, CONVERSATION)
    assert len(sample.input_ids) == len(sample.labels)
    assert labelled_text(tok, sample) == ["2 + 3 = 5, so \\boxed{5}.<|im_end|>", "Therefore 19.<|im_end|>"]
    assert tok.decode(sample.input_ids) == tok.apply_chat_template(CONVERSATION, tokenize=False)


def test_both_labelling_methods_agree(tokenizer, plain_tokenizer):
    for row in arithmetic_rows(5):
        a = tokenize_conversation(tokenizer, to_messages(row, "Reason step by step."))
        b = tokenize_conversation(plain_tokenizer, to_messages(row, "Reason step by step."))
        assert a.input_ids == b.input_ids and a.labels == b.labels


def test_system_prompt_only_when_missing():
    row = {"messages": CONVERSATION[1:3]}
    assert to_messages(row, "SYS")[0] == {"role": "system", "content": "SYS"}
    assert to_messages({"messages": CONVERSATION}, "SYS")[0]["content"] == "Be brief."
    assert to_messages(row, "")[0]["role"] == "user"  # an empty prompt adds nothing


def test_bad_rows_are_counted(tokenizer):
    good = arithmetic_rows(3)
    bad = [
        {"messages": [{"role": "user", "content": "hi"}]},  # no assistant turn
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "   "}]},  # empty
        {"messages": [{"role": "robot", "content": "x"}]},
        {"question": "no messages"},
        "not an object",
    ]
    samples, stats = prepare_samples(tokenizer, good + bad, max_length=512, overlong="drop", system_prompt="S")
    assert (len(samples), stats.kept, stats.bad, stats.rows) == (3, 3, 5, 8)
    with pytest.raises(WorkloadError) as err:
        prepare_samples(tokenizer, bad, max_length=512, overlong="drop", system_prompt="S")
    assert err.value.reason == "EmptyDataset" and "5 unusable" in err.value.message
    # each reason with its count, its first rows and what was looked for
    assert "no-assistant-turn: 3 (rows row 0, row 1, row 3): the row has no non-empty answer" in err.value.message
    assert "malformed-messages: 1 (rows row 2): messages[0].role is 'robot'" in err.value.message
    assert "not-an-object: 1 (rows row 4): str" in err.value.message


def test_overlong_drop_and_truncate(tokenizer):
    rows = arithmetic_rows(4)
    rows.append({"messages": [{"role": "user", "content": "Long?"},
                              {"role": "assistant", "content": "Let me check this again. " * 40}]})
    lengths = [len(tokenize_conversation(tokenizer, to_messages(r, None)).input_ids) for r in rows]
    limit = max(lengths[:4])
    assert lengths[4] > limit
    samples, stats = prepare_samples(tokenizer, rows, max_length=limit, overlong="drop", system_prompt=None)
    assert (len(samples), stats.overlong_dropped, stats.truncated, stats.dropped_for_length) == (4, 1, 0, 1)
    samples, stats = prepare_samples(tokenizer, rows, max_length=limit, overlong="truncate", system_prompt=None)
    assert (len(samples), stats.overlong_dropped, stats.truncated) == (5, 0, 1)
    assert max(len(s.input_ids) for s in samples) == limit
    with pytest.raises(WorkloadError) as err:  # every sample over the limit
        prepare_samples(tokenizer, rows, max_length=16, overlong="drop", system_prompt=None)
    assert err.value.reason == "EmptyDataset" and "5 over maxLength 16" in err.value.message


def test_read_rows_jsonl_parquet_and_unreadable(tmp_path):
    rows = arithmetic_rows(3)
    assert read_rows(str(write_dataset(tmp_path / "j", rows))) == rows
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "p").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p" / "data.parquet")
    assert read_rows(f"file://{tmp_path / 'p'}")[1]["messages"] == rows[1]["messages"]
    with pytest.raises(WorkloadError) as err:
        read_rows(str(tmp_path / "missing"))
    assert err.value.reason == "DatasetUnreadable"
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkloadError, match="no .jsonl, .json or .parquet files") as err:
        read_rows(str(tmp_path / "empty"))
    assert err.value.reason == "DatasetUnreadable"


def test_a_broken_line_is_counted_with_its_number(tmp_path, tokenizer):
    rows = arithmetic_rows(3)
    broken = write_dataset(tmp_path / "broken", rows)
    with open(broken / "data.jsonl", "a") as fh:
        fh.write("{not json\n")
    samples, stats = prepare_samples(tokenizer, read_rows(str(broken)), max_length=512, overlong="drop", system_prompt=None)
    assert len(samples) == 3 and stats.unusable.reasons == {"invalid-json": 1}
    assert stats.unusable.details["invalid-json"].startswith("line 4:")


def test_epoch_order_is_deterministic_and_wraps():
    first = epoch_order(10, 4, seed=1, epoch=0)
    assert first == epoch_order(10, 4, seed=1, epoch=0)
    assert first != epoch_order(10, 4, seed=1, epoch=1)
    assert len(first) == 12 and set(first) == set(range(10)) and first[10:] == first[:2]


def test_rank_micro_batches_split_each_step_across_ranks():
    order = list(range(16))
    parts = [rank_micro_batches(order, 1, 8, rank, 2, 2) for rank in range(2)]
    assert all(len(p) == 2 and all(len(m) == 2 for m in p) for p in parts)
    assert sorted(i for p in parts for m in p for i in m) == list(range(8, 16))


def test_collate_packed_and_padded(tokenizer):
    samples, _ = prepare_samples(tokenizer, arithmetic_rows(3), max_length=512, overlong="drop", system_prompt=None)
    lengths = [len(s.input_ids) for s in samples]
    packed = collate(samples, packing=True, pad_id=0)
    assert packed["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed
    starts = [0, lengths[0], lengths[0] + lengths[1]]
    assert [int(packed["position_ids"][0, s]) for s in starts] == [0, 0, 0]
    assert all(int(packed["labels"][0, s]) == IGNORE for s in starts)
    padded = collate(samples, packing=False, pad_id=0)
    assert padded["input_ids"].shape == (3, max(lengths))
    assert padded["attention_mask"].sum().item() == sum(lengths)
    assert int((padded["labels"] != IGNORE).sum()) == int((packed["labels"] != IGNORE).sum())
