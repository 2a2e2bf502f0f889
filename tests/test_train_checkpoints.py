"""Servable exports of kept checkpoints (checkpoints.export): each kept checkpoint of a ZeRO-3 run holds a
model that transformers loads, pruning removes the export with its checkpoint, and the result lists what is
kept (the operator's FineTuneJob status.checkpoints comes from it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reasonops.contract import read_document
from reasonops.progress import Reporter
from reasonops.tinymodel import build_tiny_model
from reasonops.train import config_from_resource, main

from train_support import arithmetic_rows, resource_doc, write_dataset

pytestmark = pytest.mark.slow


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def test_kept_checkpoints_are_servable_and_pruned_with_their_export(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build_tiny_model(tmp_path / "base", layers=2, hidden=32, seed=3)
    data = write_dataset(tmp_path / "data", arithmetic_rows(16))
    out = tmp_path / "out"
    seen: dict[str, bool] = {}  # checkpoint -> its export existed when training reported it

    def patcher(patch: dict) -> None:
        latest = (patch.get("progress") or patch).get("latestCheckpoint")
        if latest:
            seen.setdefault(latest, (out / latest / "model" / "model.safetensors").is_file())

    # 3 epochs x 4 steps, a checkpoint every 2 steps, the last 2 kept
    doc = resource_doc(base, data, out, checkpoints={"everySteps": 2, "keep": 2, "export": True})
    result = main(config_from_resource(read_document(doc)), Reporter(min_interval=0, patcher=patcher))

    assert result["checkpoints"] == [{"step": 10, "epoch": "2.50"}, {"step": 12, "epoch": "3.00"}]
    assert seen.get("checkpoints/step-4") is True  # written with its checkpoint ...
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["step-10", "step-12"]  # ... and gone with it (step-2 to step-8 were pruned)
    for name in kept:
        model_dir = out / "checkpoints" / name / "model"
        for file in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
            assert (model_dir / file).exists(), f"{name}: {file}"
        assert not (out / "checkpoints" / name / ".tmp-export").exists()
    # The export is the consolidated model, not a ZeRO-3 shard: it loads and generates.
    model = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / "step-10" / "model")
    tokenizer = AutoTokenizer.from_pretrained(out / "checkpoints" / "step-10" / "model")
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    assert model.generate(**inputs, max_new_tokens=4, do_sample=False).shape[1] > inputs["input_ids"].shape[1]
    # Each export holds its own step's weights: the last one is the final model, the earlier one differs.
    final, last, earlier = (_weights(out / "model"), _weights(out / "checkpoints" / "step-12" / "model"),
                            _weights(out / "checkpoints" / "step-10" / "model"))
    assert final.keys() == last.keys() == earlier.keys()
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert any(not torch.equal(earlier[k], last[k]) for k in final)


def test_without_export_checkpoints_hold_only_training_state(tmp_path):
    base = build_tiny_model(tmp_path / "base", layers=1, hidden=16, seed=3)
    data = write_dataset(tmp_path / "data", arithmetic_rows(8))
    out = tmp_path / "out"
    doc = resource_doc(base, data, out, hyperparameters={"epochs": 1}, checkpoints={"everySteps": 1, "keep": 1})
    result = main(config_from_resource(read_document(doc)))
    assert "checkpoints" not in result
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-2"]
    assert not (out / "checkpoints" / "step-2" / "model").exists()


def test_lora_checkpoints_export_merged_models_and_reach_an_object_store(tmp_path, monkeypatch):
    """LoRA under ZeRO-3 with a file:// output: each kept checkpoint's export is the merged model (what vLLM
    loads), mirrored with its checkpoint; the remote copy is pruned with it too."""
    from safetensors.torch import load_file

    base = build_tiny_model(tmp_path / "base", layers=1, hidden=16, seed=3)
    data = write_dataset(tmp_path / "data", arithmetic_rows(8))
    remote = tmp_path / "bucket"
    monkeypatch.setenv("REASONOPS_SCRATCH", str(tmp_path / "scratch"))
    doc = resource_doc(base, data, f"file://{remote}", method="lora", lora={"rank": 4, "alpha": 8, "dropout": "0"},
                       hyperparameters={"learningRate": "2e-2", "epochs": 3}, checkpoints={"everySteps": 2, "keep": 2, "export": True})
    doc["output"] = f"file://{remote}"
    result = main(config_from_resource(read_document(doc)))
    assert [c["step"] for c in result["checkpoints"]] == [4, 6]
    assert sorted(p.name for p in (remote / "checkpoints").iterdir()) == ["step-4", "step-6"]
    merged = load_file(remote / "checkpoints" / "step-6" / "model" / "model.safetensors")
    original = load_file(base / "model.safetensors")
    assert set(merged) == set(original) and not any("lora" in key for key in merged)
    assert any(not torch.equal(merged[k], original[k]) for k in merged)
    assert (remote / "checkpoints" / "step-6" / "adapter" / "adapter_config.json").exists()
