"""End-to-end training on CPU with a tiny model: DeepSpeed ZeRO-3 in one and two processes, LoRA,
kill-and-resume, the exported model, and bad inputs that must fail with a clear reason (never hang)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
import torch

from reasonops.errors import WorkloadError
from reasonops.contract import read_document
from reasonops.progress import Reporter
from reasonops.tinymodel import build_tiny_model
from reasonops.train import config_from_resource, main

from train_support import (REPO, arithmetic_rows, losses, resource_doc, run_training, subprocess_env, summary_result,
                           train_command, write_dataset)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("train") / "model", layers=2, hidden=32, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("train") / "data", arithmetic_rows(16))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, base, dataset) -> tuple[Path, dict, list[dict]]:
    """One uninterrupted full-parameter ZeRO-3 run in this process: 3 epochs x 4 steps."""
    out = tmp_path_factory.mktemp("train") / "reference"
    sent: list[dict] = []
    reporter = Reporter(min_interval=0, patcher=sent.append)
    return out, main(config_from_resource(read_document(resource_doc(base, dataset, out))), reporter), sent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def generate(model_dir: Path) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])


def falls(curve: dict[int, float]) -> bool:
    values = [curve[k] for k in sorted(curve)]
    return sum(values[-3:]) / 3 < sum(values[:3]) / 3 - 0.2


def test_full_sft_zero3_one_process(reference, base, dataset):
    out, result, sent = reference
    assert set(result) >= {"modelLocation", "finalLoss", "steps", "droppedSamples", "latestCheckpoint", "tokens", "wallSeconds"}
    assert result["steps"] == 12 and result["droppedSamples"] == 0 and result["tokens"] > 0
    assert result["modelLocation"] == f"{out}/model"
    curve = losses(out)
    assert sorted(curve) == list(range(1, 13)) and falls(curve)
    assert result["finalLoss"] == pytest.approx(curve[12], abs=1e-6)
    # everySteps 2, keep 2: only the last two complete checkpoints remain
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-10", "step-12"]
    assert result["latestCheckpoint"] == "checkpoints/step-12"  # relative to the output, one form everywhere
    model_dir = out / "model"
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja", "_COMPLETE"):
        assert (model_dir / name).exists(), name
    assert json.loads((model_dir / "config.json").read_text())["use_cache"] is True
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == 12 and summary["tokensPerSecond"] > 0 and summary["result"] == result
    assert json.loads((out / "train_config.json").read_text())["zero_stage"] == 3
    assert (out / "_COMPLETE").exists()
    generate(model_dir)
    progress = [s["progress"] for s in sent if s["progress"].get("stage") == "train"]
    assert [p["step"] for p in progress] == list(range(1, 13))
    assert [p.get("latestCheckpoint") for p in progress][:4] == [None, "checkpoints/step-2", "checkpoints/step-2",
                                                                 "checkpoints/step-4"]
    last = progress[-1]
    assert last["totalSteps"] == 12 and last["epoch"] == "3.00" and float(last["loss"]) == pytest.approx(result["finalLoss"], abs=1e-4)
    assert float(last["learningRate"]) > 0 and float(last["tokensPerSecond"]) > 0 and "etaSeconds" in last
    assert last["latestCheckpoint"] == result["latestCheckpoint"]
    # a retried pod after completion gets the stored result without training again
    started = time.monotonic()
    assert main(config_from_resource(read_document(resource_doc(base, dataset, out)))) == result
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("stage", [2, 3])
def test_lora_merges_into_a_plain_model(tmp_path, monkeypatch, base, dataset, stage):
    """ZeRO-2 with paths; ZeRO-3 with file:// URIs for model, dataset and output (copied, staged, uploaded)."""
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    model_loc, data_loc, out_loc = (str(base), str(dataset), str(out)) if stage == 2 else (
        f"file://{base}", f"file://{dataset}", f"file://{out}")
    monkeypatch.setenv("REASONOPS_SCRATCH", str(tmp_path / "scratch"))
    doc = resource_doc(model_loc, data_loc, out_loc, method="lora", lora={"rank": 8, "alpha": 16, "dropout": "0"},
                       deepspeed={"zeroStage": stage}, hyperparameters={"learningRate": "2e-2", "epochs": 2},
                       checkpoints={"everyEpochs": 1, "everySteps": None})
    doc["spec"]["dataset"] = {"uri": data_loc} if stage == 3 else {"path": data_loc}
    doc["output"] = out_loc
    result = main(config_from_resource(read_document(doc)))
    assert result["steps"] == 8 and result["modelLocation"] == f"{out_loc}/model" and falls(losses(out))
    if stage == 2:
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-8"]
    assert (out / "_COMPLETE").exists()
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and (out / "adapter" / "adapter_model.safetensors").exists()
    merged, original = load_file(out / "model" / "model.safetensors"), load_file(base / "model.safetensors")
    assert not any("lora" in key for key in merged)
    assert set(merged) == set(original)
    changed = [k for k in merged if not torch.equal(merged[k], original[k])]
    assert any("q_proj.weight" in k for k in changed) and not any("norm" in k for k in changed)
    generate(out / "model")


def test_zero3_with_cpu_offload(tmp_path, base, dataset):
    """Optimizer and parameters offloaded to CPU (DeepSpeed's CPU Adam, JIT-compiled on first use)."""
    out = tmp_path / "offload"
    doc = resource_doc(base, dataset, out, deepspeed={"zeroStage": 3, "offloadOptimizer": True, "offloadParams": True},
                       hyperparameters={"epochs": 1})
    result = main(config_from_resource(read_document(doc)))
    curve = losses(out)
    assert result["steps"] == 4 and curve[4] < curve[1] - 0.1
    assert json.loads((out / "train_config.json").read_text())["offload_optimizer"] is True
    generate(out / "model")


def test_two_processes_zero3_match_one_process(tmp_path, reference, base, dataset):
    out = tmp_path / "two"
    resource = tmp_path / "resource.json"
    resource.write_text(json.dumps(resource_doc(base, dataset, out)))
    proc = run_training(resource, tmp_path, nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1 of 2" in proc.stderr or "rank 1 of 2" in proc.stdout
    curve, expected = losses(out), losses(reference[0])
    assert sorted(curve) == sorted(expected) and falls(curve)
    # same samples per step, loss normalised over the global batch: the curves agree
    assert all(abs(curve[k] - expected[k]) < 2e-3 for k in expected), (curve, expected)
    generate(out / "model")


def start_pods(resource: Path, tmp: Path, nnodes: int, port: int, ranks: Optional[list[int]] = None,
               rank_env: Optional[dict[int, dict[str, str]]] = None, **extra: str) -> list[subprocess.Popen]:
    """`reasonops workload` as the pods (`ranks`, default all) of an `nnodes`-node FineTuneJob run it, with the
    operator's rendezvous environment (builders.torchrun_env) pointing at node 0 on this machine."""
    procs = []
    for rank in range(nnodes) if ranks is None else ranks:
        values = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NNODES": str(nnodes), "NPROC_PER_NODE": "1",
                  "NODE_RANK": str(rank)}
        env = subprocess_env(tmp, **values, **{f"PET_{k}": v for k, v in values.items()}, WORLD_SIZE=str(nnodes),
                             PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra,
                             **(rank_env or {}).get(rank, {}))
        procs.append(subprocess.Popen([sys.executable, "-m", "reasonops", "workload", "--resource", str(resource)],
                                      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    out = []
    for proc in procs:
        try:
            text, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise AssertionError(f"a pod did not end within {timeout:.0f}s")
        out.append((proc.returncode, text))
    return out


def test_two_pods_train_as_one_group_and_a_finished_run_does_not_launch_again(tmp_path, reference, base, dataset):
    """Two pods (nodes) of one job, each launching torchrun for its node as the pod entry does; afterwards,
    pods of the finished run (a replaced pod, or its peer) end at once instead of waiting at a rendezvous
    for an index the Job already counts as done (issue #11)."""
    out = tmp_path / "pods"
    resource = tmp_path / "resource.json"
    resource.write_text(json.dumps(resource_doc(base, dataset, out)))
    ended = finish(start_pods(resource, tmp_path, 2, free_port()), timeout=300)
    assert [code for code, _ in ended] == [0, 0], [text[-3000:] for _, text in ended]
    assert "launching" in ended[1][1] and "--node-rank=1" in ended[1][1]
    curve, expected = losses(out), losses(reference[0])
    assert all(abs(curve[k] - expected[k]) < 2e-3 for k in expected), (curve, expected)
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    for rank in (0, 1):  # one pod replaced, its peer done: a launch would wait for the peer for minutes
        started = time.monotonic()
        [(code, text)] = finish(start_pods(resource, tmp_path, 2, free_port(), ranks=[rank]), timeout=100)
        assert code == 0 and "nothing to launch" in text and "launching" not in text, text[-3000:]
        assert time.monotonic() - started < 60
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == written


def test_a_pod_killed_mid_run_fails_counted_and_its_peer_uncounted_then_the_group_resumes(tmp_path, reference, base, dataset):
    """Node 0 (the store's host) dies right after its step-4 checkpoint. Its pod fails as a pod failure the Job
    counts; the peer fails too, but with PEER_LOST_EXIT_CODE, which the Job's pod failure policy ignores, so
    one kill is one counted restart. Both pods started again resume and end on the uninterrupted curve."""
    from reasonops.contract import PEER_LOST_EXIT_CODE

    out = tmp_path / "pods"
    resource = tmp_path / "resource.json"
    resource.write_text(json.dumps(resource_doc(base, dataset, out)))
    ended = finish(start_pods(resource, tmp_path, 2, free_port(), rank_env={0: {"REASONOPS_CRASH_AFTER_CHECKPOINT": "4"}}),
                   timeout=300)
    assert ended[0][0] not in (0, PEER_LOST_EXIT_CODE), ended[0][1][-3000:]
    assert ended[1][0] == PEER_LOST_EXIT_CODE, ended[1][1][-3000:]
    assert "lost a peer" in ended[1][1]
    assert (out / "checkpoints" / "step-4" / "_COMPLETE").exists() and not (out / "_COMPLETE").exists()
    again = finish(start_pods(resource, tmp_path, 2, free_port()), timeout=300)
    assert [code for code, _ in again] == [0, 0], [text[-3000:] for _, text in again]
    assert "resumed from" in again[0][1]
    curve, expected = losses(out), losses(reference[0])
    assert sorted(curve) == sorted(expected)
    assert all(abs(curve[k] - expected[k]) < 2e-3 for k in expected), (curve, expected)


def kill_after_checkpoint(resource: Path, tmp: Path, out: Path) -> None:
    """Run training in a subprocess that SIGKILLs itself the moment its step-4 checkpoint is complete
    (the trainer's fault-injection hook: deterministic, no polling)."""
    proc = run_training(resource, tmp, REASONOPS_CRASH_AFTER_CHECKPOINT="4")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (out / "checkpoints" / "step-4" / "_COMPLETE").exists() and not (out / "_COMPLETE").exists()


def test_killed_run_resumes_the_same_curve(tmp_path, reference, base, dataset):
    """A one-process pod (WORLD_SIZE=1 and a master set, no RANK) killed right after a checkpoint: no loss
    line is lost, the resumed curve is the uninterrupted one, status never goes back, one checkpoint form."""
    out = tmp_path / "resumed"
    resource = tmp_path / "resource.json"
    resource.write_text(json.dumps(resource_doc(base, dataset, out)))
    kill_after_checkpoint(resource, tmp_path, out)
    assert sorted(losses(out)) == [1, 2, 3, 4], "the step of the checkpoint keeps its line"
    assert sorted(losses(out / "checkpoints" / "step-4")) == [1, 2, 3, 4], "and the checkpoint carries it"

    resumed = run_training(resource, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    curve, expected = losses(out), losses(reference[0])
    assert sorted(curve) == list(range(1, 13))
    assert all(abs(curve[k] - expected[k]) < 1e-4 for k in expected), (curve, expected)
    result = summary_result(out)
    assert result["steps"] == 12 and result["latestCheckpoint"] == "checkpoints/step-12"


def test_a_run_paused_for_a_kill_waits_after_its_checkpoint_and_the_resumed_run_goes_on(tmp_path, reference, base, dataset):
    """The test-only pause (preemption.PAUSE_AT_STEP, with which tests/test_realnode.py kills or deletes a pod at a
    known step): the process stands still after step 4 and its checkpoint until it is killed; the run resumed
    with the same environment does not pause again and ends on the uninterrupted curve."""
    out = tmp_path / "paused"
    resource = tmp_path / "resource.json"
    resource.write_text(json.dumps(resource_doc(base, dataset, out)))
    pause = {"REASONOPS_TEST_PAUSE_AT_STEP": "4"}
    proc = subprocess.Popen(train_command(resource), env=subprocess_env(tmp_path, **pause), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:  # ends only if the process does
            seen.append(line)
            if "REASONOPS_TEST_PAUSE_AT_STEP=4: rank 0 paused" in line:
                break
        time.sleep(2)
        assert proc.poll() is None, "".join(seen)[-3000:]
        assert sorted(losses(out)) == [1, 2, 3, 4] and (out / "checkpoints" / "step-4" / "_COMPLETE").exists()
    finally:
        proc.kill()
        proc.wait()
    resumed = run_training(resource, tmp_path, **pause)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "REASONOPS_TEST_PAUSE_AT_STEP" not in resumed.stderr
    curve, expected = losses(out), losses(reference[0])
    assert sorted(curve) == list(range(1, 13))
    assert all(abs(curve[k] - expected[k]) < 1e-4 for k in expected), (curve, expected)


def test_resume_never_reports_a_lower_step(tmp_path, reference, base, dataset):
    """Killed after step 11 with the newest checkpoint at step 10: step 11 is redone, status stays at 11."""
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    shutil.rmtree(out / "checkpoints" / "step-12")
    os.unlink(out / "_COMPLETE")
    lines = (out / "train_log.jsonl").read_text().splitlines()
    (out / "train_log.jsonl").write_text("\n".join(lines[:11]) + "\n")  # as a kill after step 11 leaves it
    sent: list[dict] = []
    resumed = main(config_from_resource(read_document(resource_doc(base, dataset, out))), Reporter(min_interval=0, patcher=sent.append))
    steps = [s["progress"]["step"] for s in sent if "step" in s["progress"]]
    assert steps[0] == 11 and steps == sorted(steps) and steps[-1] == 12, steps
    assert {s["progress"].get("latestCheckpoint") for s in sent} <= {None, "checkpoints/step-10", "checkpoints/step-12"}
    assert resumed["steps"] == 12 and sorted(losses(out)) == list(range(1, 13))


def test_object_store_output_resumes_on_another_nodes_empty_disk(tmp_path, reference, base, dataset):
    """A URI output has no shared directory: checkpoints are mirrored as they are written, so a pod
    restarted on another node (an empty scratch disk) fetches the newest one and continues the curve."""
    remote = tmp_path / "bucket" / "runs" / "tiny"
    resource = tmp_path / "resource.json"
    resource.write_text(json.dumps(resource_doc(base, dataset, f"file://{remote}")))
    kill_after_checkpoint(resource, tmp_path / "node-a", remote)

    resumed = run_training(resource, tmp_path / "node-b")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "fetched checkpoint step-" in resumed.stderr and "resumed from file://" in resumed.stderr
    curve, expected = losses(remote), losses(reference[0])
    assert sorted(curve) == list(range(1, 13)), "the loss curve carries over from the first node"
    assert all(abs(curve[k] - expected[k]) < 1e-4 for k in expected), (curve, expected)
    result = summary_result(remote)
    assert result["steps"] == 12 and result["latestCheckpoint"] == "checkpoints/step-12"
    # The store keeps the newest `keep` (2) complete checkpoints, like a volume does, and the model.
    assert sorted(p.name for p in (remote / "checkpoints").iterdir()) == ["step-10", "step-12"]
    assert (remote / "checkpoints" / "step-12" / "_COMPLETE").exists() and (remote / "model" / "config.json").exists()


@pytest.mark.parametrize("case, reason", [
    ("missing_model", "ModelNotFound"),
    ("missing_dataset", "DatasetUnreadable"),
    ("no_assistant", "EmptyDataset"),
    ("all_overlong", "EmptyDataset"),
    ("indivisible_batch", "InvalidSpec"),
    ("uncached_hub_model", "ModelNotFound"),
])
def test_bad_inputs_fail_with_a_reason(tmp_path, monkeypatch, base, dataset, case, reason):
    model, data, spec = base, dataset, {}
    if case == "uncached_hub_model":
        import huggingface_hub.constants

        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        model = "no-such-org/no-such-model"
    elif case == "missing_model":
        model = tmp_path / "no-model"
    elif case == "missing_dataset":
        data = tmp_path / "no-data"
    elif case == "no_assistant":
        data = write_dataset(tmp_path / "d", [{"messages": [{"role": "user", "content": "hi"}]}] * 4)
    elif case == "all_overlong":
        spec = {"hyperparameters": {"maxLength": 16}}
    else:
        spec = {"hyperparameters": {"globalBatchSize": 5, "microBatchSize": 2}}
    with pytest.raises(WorkloadError) as err:
        main(config_from_resource(read_document(resource_doc(model, data, tmp_path / "out", **spec))))
    assert err.value.reason == reason, err.value.message


def test_two_process_bad_input_exits_instead_of_hanging(tmp_path, base):
    data = write_dataset(tmp_path / "d", [{"messages": [{"role": "user", "content": "hi"}]}] * 4)
    resource = tmp_path / "resource.json"
    resource.write_text(json.dumps(resource_doc(base, data, tmp_path / "out")))
    proc = run_training(resource, tmp_path, nproc=2, timeout=150)
    assert proc.returncode != 0
    assert "EmptyDataset" in proc.stderr  # the runner's one-line error of the failing rank


def test_benchmark_script_runs(tmp_path):
    """benchmarks/train_throughput.py end to end on a tiny shape: packing removes all padding."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "benchmarks" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    packed, padded = bench.main(["--max-length", "256", "--steps", "1", "--warmup", "0", "--global-batch", "4"])
    assert packed["paddingWaste"] == 0.0 < padded["paddingWaste"]
    assert packed["tokensPerSecond"] > 0 and packed["mfu"] is None  # no MFU on CPU


def wait_for_step(out: Path, step: int, procs: list[subprocess.Popen], timeout: float = 300) -> None:
    """Until the loss curve has `step`, where the run pauses (preemption.PAUSE_AT_STEP) until it is signalled."""
    deadline = time.monotonic() + timeout
    while step not in (logged_steps(out) if (out / "train_log.jsonl").exists() else []):
        ended = [proc.returncode for proc in procs if proc.poll() is not None]
        assert not ended and time.monotonic() < deadline, f"the run did not reach step {step} (ended: {ended})"
        time.sleep(0.2)


def logged_steps(out: Path) -> list[int]:
    """Every line of the loss curve, in order: a step done twice shows twice."""
    return [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def complete_checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir() if (p / "_COMPLETE").exists())


def test_sigterm_to_one_pod_checkpoints_the_step_in_every_rank_and_the_group_resumes_from_it(tmp_path, reference, base,
                                                                                           dataset):
    """`kubectl delete pod` of one pod of two, at step 5 (everySteps 2: the last scheduled checkpoint is step 4):
    both ranks agree, save step 5 (ZeRO-3: each its own shard), and both pods exit with STOPPED_EXIT_CODE, which
    the Job's pod failure policy ignores. Started again, the group resumes at step 6: every step once."""
    from reasonops.contract import STOPPED_EXIT_CODE
    from reasonops.train.preemption import PAUSE_AT_STEP

    out = tmp_path / "pods"
    resource = tmp_path / "resource.json"
    resource.write_text(json.dumps(resource_doc(base, dataset, out)))
    pods = start_pods(resource, tmp_path, 2, free_port(), rank_env={0: {PAUSE_AT_STEP: "5"}})
    wait_for_step(out, 5, pods)
    pods[0].send_signal(signal.SIGTERM)  # what the kubelet sends the deleted pod's entry
    ended = finish(pods, timeout=200)
    assert [code for code, _ in ended] == [STOPPED_EXIT_CODE] * 2, [text[-3000:] for _, text in ended]
    assert "stopped on a signal at step 5" in ended[0][1] and "stopped on a signal" in ended[1][1]
    assert complete_checkpoints(out) == ["step-4", "step-5"] and not (out / "_COMPLETE").exists()
    shards = sorted(p.name for p in (out / "checkpoints" / "step-5" / "state").iterdir() if "optim_states" in p.name)
    assert len(shards) == 2, shards  # one ZeRO-3 optimizer partition per rank
    assert logged_steps(out) == [1, 2, 3, 4, 5]
    print("checkpoint on SIGTERM:", [line for line in ended[0][1].splitlines() if "written in" in line])

    again = finish(start_pods(resource, tmp_path, 2, free_port()), timeout=300)
    assert [code for code, _ in again] == [0, 0], [text[-3000:] for _, text in again]
    assert "step-5 at step 5" in again[0][1]
    assert logged_steps(out) == list(range(1, 13)), "one loss curve: no step repeated or skipped"
    curve, expected = losses(out), losses(reference[0])
    assert all(abs(curve[k] - expected[k]) < 2e-3 for k in expected), (curve, expected)


def test_a_second_signal_during_the_stop_checkpoint_leaves_the_previous_one(tmp_path, reference, base, dataset):
    """A one-process pod signalled at step 7 gets a second SIGTERM while its step-7 checkpoint is written: it ends
    at once, step-7 stays an incomplete temporary directory, and the run resumes from step 6 as if killed."""
    from reasonops.train.preemption import PAUSE_AT_STEP, SIGNAL_DURING_STOP_CHECKPOINT
    from train_support import train_command

    out = tmp_path / "out"
    resource = tmp_path / "resource.json"
    resource.write_text(json.dumps(resource_doc(base, dataset, out)))
    proc = subprocess.Popen(train_command(resource), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=subprocess_env(tmp_path, **{PAUSE_AT_STEP: "7", SIGNAL_DURING_STOP_CHECKPOINT: "1"}))
    wait_for_step(out, 7, [proc])
    proc.send_signal(signal.SIGTERM)
    [(code, text)] = finish([proc], timeout=120)
    assert code == -signal.SIGTERM and "second signal SIGTERM" in text, text[-3000:]
    assert complete_checkpoints(out) == ["step-4", "step-6"]
    assert (out / "checkpoints" / ".tmp-step-7").is_dir()

    resumed = run_training(resource, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-6 at step 6" in resumed.stderr and not (out / "checkpoints" / ".tmp-step-7").exists()
    assert logged_steps(out) == list(range(1, 13))
    curve, expected = losses(out), losses(reference[0])
    assert all(abs(curve[k] - expected[k]) < 1e-4 for k in expected), (curve, expected)


def test_ctrl_c_on_reasonops_run_checkpoints_and_the_next_run_resumes(tmp_path, base, dataset):
    """`reasonops run` of a FineTuneJob, Ctrl-C at step 3: a one-line message and status 75 (no traceback), the
    step's checkpoint; the same command again resumes at step 4 and finishes, every step logged once."""
    import yaml

    from reasonops.contract import STOPPED_EXIT_CODE
    from reasonops.train.preemption import PAUSE_AT_STEP

    spec = resource_doc(base, dataset, "models", hyperparameters={"epochs": 2})["spec"]
    file = tmp_path / "job.yaml"
    file.write_text(yaml.safe_dump({"apiVersion": "reasonops.io/v1alpha1", "kind": "FineTuneJob",
                                    "metadata": {"name": "tiny"}, "spec": spec}))
    command = [sys.executable, "-m", "reasonops.cli", "run", str(file), "--output", str(tmp_path / "out")]
    env = {k: v for k, v in subprocess_env(tmp_path).items() if k not in ("WORLD_SIZE", "NNODES", "NPROC_PER_NODE",
                                                                          "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.Popen(command, cwd=REPO, env={**env, PAUSE_AT_STEP: "3"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def runs() -> list[Path]:  # the run's output directory, once it has a loss curve
        return [p.parent for p in (tmp_path / "out").rglob("train_log.jsonl") if "checkpoints" not in p.parts]

    deadline = time.monotonic() + 300
    while not [out for out in runs() if 3 in logged_steps(out)]:
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not reach step 3"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    [(code, text)] = finish([proc], timeout=120)
    assert code == STOPPED_EXIT_CODE and "Traceback" not in text, text[-3000:]
    assert "stopped: stopped on a signal at step 3; checkpoint checkpoints/step-3 is complete" in text
    [out] = runs()
    assert complete_checkpoints(out) == ["step-2", "step-3"] and logged_steps(out) == [1, 2, 3]

    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "step-3 at step 3" in again.stderr and logged_steps(out) == list(range(1, 9))
