"""FineTuneJob → TrainConfig, DeepSpeed config and the torchrun launch command (no training)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reasonops.api.v1alpha1 import LIMO_SYSTEM_PROMPT
from reasonops.contract import WorkloadDocument, read_document
from reasonops.errors import WorkloadError
from reasonops.train import config_from_resource, deepspeed_config, launch_command, should_launch
from reasonops.train.launch import check_master_reachable, topology

from train_support import resource_doc


def doc(**spec) -> WorkloadDocument:
    """A document with only the given spec fields beyond the required ones."""
    d = resource_doc("/models/base", "/data/set", "/out/run")
    for key in ("hyperparameters", "checkpoints", "preset"):
        d["spec"].pop(key)
    d["spec"].update(spec)
    return read_document(d)


def test_limo_preset_is_the_default():
    cfg = config_from_resource(doc())
    assert (cfg.preset, cfg.learning_rate, cfg.epochs, cfg.scheduler, cfg.warmup_ratio) == ("limo", 5e-6, 15, "cosine", 0.0)
    assert (cfg.max_length, cfg.global_batch_size, cfg.micro_batch_size) == (16384, 32, 1)
    assert (cfg.checkpoint_every_epochs, cfg.checkpoint_every_steps) == (1, None)
    assert cfg.system_prompt == LIMO_SYSTEM_PROMPT
    assert (cfg.zero_stage, cfg.packing, cfg.gradient_checkpointing, cfg.attention) == (3, True, True, "flash_attention_2")
    assert cfg.dataset == "/data/set" and cfg.output == "/out/run" and cfg.model == "/models/base"
    # as train_limo.yaml: cutoff_len truncates, every epoch checkpoint kept, no offload, per-sample loss
    assert (cfg.overlong, cfg.checkpoint_keep, cfg.offload_params, cfg.offload_optimizer) == ("truncate", 0, False, False)
    assert cfg.loss_normalisation == "sample" and cfg.lora_dropout == 0.0


def test_sky_t1_preset_as_published():
    """qwen2_full_sft_32B.yaml / qwen2_lora_config.yaml: ZeRO-3 offload of both, save_steps 100 with every
    checkpoint kept, the data's own system prompt, truncation at 16384."""
    for method in ("full", "lora"):
        cfg = config_from_resource(doc(preset="sky-t1", method=method))
        assert (cfg.zero_stage, cfg.offload_params, cfg.offload_optimizer) == (3, True, True)
        assert (cfg.checkpoint_every_steps, cfg.checkpoint_every_epochs, cfg.checkpoint_keep) == (100, None, 0)
        assert cfg.system_prompt is None and cfg.overlong == "truncate" and cfg.max_length == 16384
    ds = deepspeed_config(cfg, world_size=8, bf16=True)
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu" and ds["gradient_accumulation_steps"] == 12
    # explicit fields still win: no offload at ZeRO-2, a given cadence, the built-in preset's token loss
    cfg = config_from_resource(doc(preset="sky-t1", deepspeed={"zeroStage": 2}, checkpoints={"everyEpochs": 1, "keep": 2},
                                   hyperparameters={"lossNormalisation": "token", "overlong": "drop"}))
    assert (cfg.offload_params, cfg.offload_optimizer, cfg.checkpoint_every_epochs, cfg.checkpoint_keep) == (False, False, 1, 2)
    assert (cfg.loss_normalisation, cfg.overlong) == ("token", "drop")
    assert config_from_resource(doc(preset="none")).loss_normalisation == "token"


def test_sample_loss_needs_one_sample_per_micro_batch():
    cfg = config_from_resource(doc(hyperparameters={"microBatchSize": 2}))
    with pytest.raises(WorkloadError) as err:
        cfg.gradient_accumulation(8)
    assert "lossNormalisation sample" in err.value.message and "microBatchSize 1" in err.value.message


def test_sky_t1_lora_preset_and_overrides_win():
    cfg = config_from_resource(doc(preset="sky-t1", method="lora"))
    assert (cfg.learning_rate, cfg.epochs, cfg.warmup_ratio, cfg.global_batch_size) == (1e-4, 3, 0.1, 96)
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.lora_target_modules) == (64, 128, None)
    cfg = config_from_resource(doc(preset="sky-t1", hyperparameters={"learningRate": "2e-5", "epochs": 5},
                                   lora={"rank": 8, "targetModules": ["q_proj"]}, method="lora",
                                   checkpoints={"everySteps": 50, "keep": 7}, systemPrompt=""))
    assert (cfg.learning_rate, cfg.epochs, cfg.lora_rank, cfg.lora_alpha) == (2e-5, 5, 8, 128)
    assert cfg.lora_target_modules == ["q_proj"]
    assert (cfg.checkpoint_every_steps, cfg.checkpoint_every_epochs, cfg.checkpoint_keep) == (50, None, 7)
    assert cfg.system_prompt == "" and cfg.lora_dropout == 0.0


def test_dataset_location_from_context_wins():
    d = doc()
    d.context.datasetLocation, d.context.datasetRevision = "s3://bucket/ds/abc", "abc"
    assert config_from_resource(d).dataset == "s3://bucket/ds/abc"


def test_gradient_accumulation_and_indivisible_batch():
    cfg = config_from_resource(doc())
    assert cfg.gradient_accumulation(8) == 4
    assert cfg.gradient_accumulation(32) == 1
    with pytest.raises(WorkloadError) as err:
        cfg.gradient_accumulation(3)
    assert err.value.reason == "InvalidSpec"
    assert "globalBatchSize 32" in err.value.message and "microBatchSize 1" in err.value.message
    assert "world size 3" in err.value.message


def test_deepspeed_config_from_spec():
    cfg = config_from_resource(doc(deepspeed={"zeroStage": 3, "offloadOptimizer": True, "offloadParams": True},
                                   hyperparameters={"maxGradNorm": "0.5"}))
    ds = deepspeed_config(cfg, world_size=8, bf16=True)
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert ds["bf16"]["enabled"] is True and ds["gradient_clipping"] == 0.5
    assert ds["train_batch_size"] == 32 and ds["gradient_accumulation_steps"] == 4
    assert ds["optimizer"]["params"]["torch_adam"] is False  # offloaded: DeepSpeed's CPU Adam
    plain = deepspeed_config(config_from_resource(doc(deepspeed={"zeroStage": 2})), world_size=1, bf16=False)
    assert plain["zero_optimization"]["stage"] == 2 and "offload_param" not in plain["zero_optimization"]
    assert plain["bf16"]["enabled"] is False and plain["optimizer"]["params"]["torch_adam"] is True


def test_launch_command_multi_node():
    env = {"NNODES": "4", "NPROC_PER_NODE": "8", "NODE_RANK": "2", "MASTER_ADDR": "job-0.job", "MASTER_PORT": "29400"}
    cmd = launch_command(doc(), env)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    for arg in ("--nnodes=4", "--nproc-per-node=8", "--node-rank=2", "--master-addr=job-0.job",
                "--master-port=29400", "--max-restarts=0"):
        assert arg in cmd
    assert cmd[-5:] == ["--no-python", "reasonops", "workload", "--resource", "/etc/reasonops/resource.json"]
    assert should_launch(doc(), env)
    assert not should_launch(doc(), {**env, "LOCAL_RANK": "0", "WORLD_SIZE": "32"})  # already a worker


def test_launch_command_single_node_and_pet_aliases():
    cmd = launch_command(doc(), {"PET_NPROC_PER_NODE": "2"}, worker=[sys.executable, "-m", "reasonops.train", "--resource", "r.json"])
    assert "--standalone" in cmd and "--nproc-per-node=2" in cmd
    assert cmd[-4:] == ["-m", "reasonops.train", "--resource", "r.json"]
    assert not should_launch(doc(), {"NPROC_PER_NODE": "1"})
    assert topology(doc(numNodes=2, gpusPerNode=4), {}).nnodes == 2


def test_unreachable_master_fails_fast_with_details():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"NODE_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    started = time.monotonic()
    with pytest.raises(WorkloadError) as err:
        check_master_reachable(env, timeout_s=1)
    assert time.monotonic() - started < 10
    assert err.value.reason == "RendezvousFailed"
    assert f"node 1 could not reach the master 127.0.0.1:{port}" in err.value.message
    assert "127.0.0.1 resolves to 127.0.0.1" in err.value.message
    with pytest.raises(WorkloadError) as err:
        check_master_reachable({**env, "MASTER_ADDR": "no-such-host.invalid"}, timeout_s=1)
    assert "no-such-host.invalid does not resolve" in err.value.message
    check_master_reachable({**env, "NODE_RANK": "0"}, timeout_s=1)  # the master node does not wait for itself


def _worker(code: str) -> list[str]:
    """A stand-in for torchrun: a real child process running `code` (the launcher only sees its exit)."""
    return [sys.executable, "-c", "import os, signal, sys, time\nfrom reasonops.train.launch import mark_worker_done\n" + code]


def test_group_exit_zero_counts_only_when_every_worker_finished():
    from reasonops.train.launch import run_group

    # torchrun ending with 0 when its store's node went away: no worker finished, so the pod must fail
    with pytest.raises(WorkloadError) as err:
        run_group(_worker("sys.exit(0)"), nproc_per_node=1)
    assert err.value.reason == "PeerFailed"
    assert "0 of this node's 1 workers finished" in err.value.message
    with pytest.raises(WorkloadError):  # one of two local workers finished
        run_group(_worker("mark_worker_done({**os.environ, 'LOCAL_RANK': '1'})"), nproc_per_node=2)
    two = "mark_worker_done({**os.environ, 'LOCAL_RANK': '0'}); mark_worker_done({**os.environ, 'LOCAL_RANK': '1'})"
    assert run_group(_worker(two), nproc_per_node=2) == 0
    assert run_group(_worker("sys.exit(3)"), nproc_per_node=1) == 3  # a failure keeps its status
    mark_worker_done_outside = _worker("mark_worker_done({}); print('ok')")  # not under a launcher: a no-op
    assert subprocess.run(mark_worker_done_outside, capture_output=True, text=True).stdout == "ok\n"


def test_a_pod_that_only_lost_its_peer_exits_with_the_uncounted_status():
    from reasonops.contract import PEER_LOST_EXIT_CODE
    from reasonops.train.launch import is_peer_loss, run_group

    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [10.1.0.7]:16807. This is "
                        "typically caused by a remote worker crashing.")
    assert is_peer_loss(gloo) and is_peer_loss(RuntimeError("NCCL error: ncclRemoteError: remote process exited or there was a network error"))
    try:
        try:
            raise gloo
        except RuntimeError as inner:
            raise WorkloadError("WorkloadCrashed", "step failed") from inner
    except WorkloadError as wrapped:
        assert is_peer_loss(wrapped)  # the cause counts
    assert is_peer_loss(WorkloadError("PeerFailed", "another rank failed while preparing; see its log"))
    for own in (RuntimeError("Mismatch in shape: grad_output[0] has a shape of [4]"), WorkloadError("EmptyDataset", "no rows"),
                MemoryError()):
        assert not is_peer_loss(own)

    lost = "from reasonops.train.launch import mark_worker_failed\n"
    assert run_group(_worker(lost + "mark_worker_failed(RuntimeError('Connection reset by peer')); sys.exit(1)"),
                     nproc_per_node=1) == PEER_LOST_EXIT_CODE
    # a local worker's own failure, with another that then lost it: the pod's failure counts
    both = (lost + "mark_worker_failed(ValueError('bad batch'), {**os.environ, 'LOCAL_RANK': '0'})\n"
            "mark_worker_failed(RuntimeError('Connection closed by peer'), {**os.environ, 'LOCAL_RANK': '1'}); sys.exit(1)")
    assert run_group(_worker(both), nproc_per_node=2) == 1


def test_group_launcher_passes_sigterm_on(tmp_path):
    """The kubelet signals the container's first process (the launcher): torchrun must get it to stop its workers."""
    import threading

    from reasonops.train.launch import run_group

    seen = tmp_path / "sigterm"
    child = _worker(f"signal.signal(signal.SIGTERM, lambda *a: (open({str(seen)!r}, 'w').close(), sys.exit(143)))\n"
                    f"open({str(tmp_path / 'started')!r}, 'w').close()\ntime.sleep(60)")

    def terminate_when_started() -> None:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=terminate_when_started, daemon=True).start()
    started = time.monotonic()
    assert run_group(child, nproc_per_node=1) == 143
    assert seen.exists() and time.monotonic() - started < 30
    assert signal.getsignal(signal.SIGTERM) is before  # the launcher's own handlers are put back


def test_attention_choice_is_explicit(monkeypatch):
    import importlib.util

    import torch

    from reasonops.train.modeling import choose_attention

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert choose_attention("flash_attention_2", cpu, torch.float32) == (
        "sdpa", "flash_attention_2 requested but there is no CUDA device; using sdpa")
    assert "does not support torch.float32" in choose_attention("flash_attention_2", gpu, torch.float32)[1]
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "flash_attn" else real_find_spec(name))
    assert choose_attention("flash_attention_2", gpu, torch.bfloat16)[0] == "sdpa"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else real_find_spec(name))
    assert choose_attention("flash_attention_2", gpu, torch.bfloat16)[0] == "flash_attention_2"
    assert choose_attention("eager", gpu, torch.bfloat16) == ("eager", "eager requested")


def test_flops_and_mfu():
    from reasonops.train.metrics import PEAK_FLOPS, Throughput, train_flops

    # 6N per token plus attention 12·L·W·s per token, causal mask not credited (PaLM, torchtitan)
    assert train_flops(1000, [10, 20], attention_width=8, layers=2) == 6 * 1000 * 30 + 12 * 2 * 8 * (100 + 400) == 276_000
    assert train_flops(1000, [10], attention_width=8, layers=2, lora=True) == 4 * 1000 * 10 + 12 * 2 * 8 * 100 == 59_200
    # Qwen2.5-1.5B shape (28 layers, 12 heads x 128) at 16k tokens: 6N·s = 1.4746e14, attention 1.3854e14
    flops = train_flops(1_500_000_000, [16384], attention_width=12 * 128, layers=28)
    assert flops == 6 * 1.5e9 * 16384 + 12 * 28 * 1536 * 16384**2 == pytest.approx(2.8600e14, rel=1e-4)
    assert PEAK_FLOPS["H200"] == PEAK_FLOPS["H100"] == 989e12
    meter = Throughput(total_steps=10, start_step=0, peak_flops_total=1e12)
    meter.add(tokens=100, flops=5e11)
    assert 0 < meter.mfu() <= 1e6 and meter.eta_seconds(5) >= 0
    assert Throughput(10, 0, None).mfu() is None


def test_attention_width_is_heads_times_head_dim():
    from types import SimpleNamespace

    from reasonops.train.metrics import attention_width

    qwen3_32b = SimpleNamespace(num_attention_heads=64, head_dim=128, hidden_size=5120)
    assert attention_width(qwen3_32b) == 8192
    qwen25_15b = SimpleNamespace(num_attention_heads=12, hidden_size=1536)  # no head_dim: hidden / heads
    assert attention_width(qwen25_15b) == 1536


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA H200 NVL", 835e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A10G", 70e12),
])
def test_peak_flops_by_device_name(monkeypatch, name, peak):
    import torch

    from reasonops.train.metrics import device_peak_flops

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert device_peak_flops(torch.device("cuda", 0)) == peak
    assert device_peak_flops(torch.device("cpu")) is None


def test_prometheus_metrics_are_served(monkeypatch):
    import urllib.request

    from reasonops.train.metrics import PrometheusMetrics

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("REASONOPS_METRICS_PORT", raising=False)
    assert PrometheusMetrics.from_env() is None  # locally off unless asked for
    monkeypatch.setenv("REASONOPS_METRICS_PORT", str(port))
    metrics = PrometheusMetrics.from_env()
    metrics.set(step=7, loss=1.25, mfu=None, tokens_per_second=1234.0)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "reasonops_train_step 7.0" in body and "reasonops_train_loss 1.25" in body
    assert "reasonops_train_tokens_per_second 1234.0" in body


def test_warmup_rounds_up_as_transformers_does():
    cfg = config_from_resource(doc(preset="sky-t1"))
    assert cfg.warmup_ratio == 0.1
    assert [cfg.warmup_steps(n) for n in (12, 10, 1, 0)] == [2, 1, 1, 0]


def test_one_process_pod_env_gets_a_rank_and_a_local_master():
    """The operator sets WORLD_SIZE=1 and a master on every training pod; torchrun is not involved for one
    process, so RANK is missing. The pod becomes rank 0 of its own group on a free local port."""
    from reasonops.train.launch import single_process_env

    env = {"WORLD_SIZE": "1", "NNODES": "1", "NPROC_PER_NODE": "1", "MASTER_ADDR": "ft-0.ft.ns.svc", "MASTER_PORT": "29500"}
    assert not should_launch(read_document(resource_doc("/m", "/d", "/o")), env)
    single_process_env(env)
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"]) == ("0", "0", "1", "127.0.0.1")
    assert int(env["MASTER_PORT"]) > 0
    worker = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "m", "MASTER_PORT": "1"}
    single_process_env(worker)  # a torchrun worker keeps what torchrun set
    assert worker == {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "m", "MASTER_PORT": "1"}
    with pytest.raises(WorkloadError) as err:
        single_process_env({"WORLD_SIZE": "2"})
    assert err.value.reason == "RendezvousFailed" and "torchrun" in err.value.message


def test_a_one_process_group_binds_no_port_another_process_could_have_taken():
    """The free port single_process_env names may be taken by another process before anything binds it (two
    test workers, a server starting beside the demo): the group of one process keeps its store in memory."""
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = ("import os; from reasonops.train import launch\n"
                f"launch._free_port = lambda: {port}\n"
                "info = launch.init_distributed(timeout_s=30, backend='gloo')\n"
                "print(info.rank, info.world_size, os.environ['MASTER_PORT'])")
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0", "1", str(port)]


def test_only_global_rank_zero_reports():
    from reasonops.contract import is_reporting_process as is_reporting_rank  # one owner: the contract

    assert is_reporting_rank({}) and is_reporting_rank({"RANK": "0", "LOCAL_RANK": "0"})
    assert not is_reporting_rank({"RANK": "1", "LOCAL_RANK": "1"})
    assert not is_reporting_rank({"RANK": "8", "LOCAL_RANK": "0", "NODE_RANK": "1"})  # local rank 0 of node 1


def test_collective_timeout_covers_hours_and_is_configurable():
    from reasonops.train.launch import collective_timeout

    assert collective_timeout({}) == 4 * 3600
    assert collective_timeout({"REASONOPS_COLLECTIVE_TIMEOUT": "36000"}) == 36000


def test_the_pods_document_keeps_the_presets_choices():
    """The document the operator mounts (static defaults filled in) trains as the preset says: sky-t1 offloads at
    ZeRO-3 and adds no system prompt (the API gave offload and systemPrompt static defaults that overrode it)."""
    from reasonops import contract
    from reasonops.api.v1alpha1 import FineTuneJob

    ft = FineTuneJob.model_validate({"metadata": {"name": "sky", "namespace": "team"}, "spec": {
        "baseModel": {"name": "Qwen/Qwen2.5-32B-Instruct"}, "dataset": {"path": "/d"}, "output": {"path": "/o"}, "preset": "sky-t1"}})
    document = contract.build_document(ft, revision="r1", output=contract.finetune_output(ft, "r1"))
    cfg = config_from_resource(read_document(document.to_json()))
    assert (cfg.zero_stage, cfg.offload_params, cfg.offload_optimizer, cfg.system_prompt) == (3, True, True, None)


def test_a_pod_stopped_after_its_checkpoint_exits_with_the_uncounted_status():
    """Workers stopped by SIGTERM after their checkpoint (errors.Stopped): the pod exits with STOPPED_EXIT_CODE,
    which the training Job's pod failure policy ignores; a failure of its own beside them still counts."""
    from reasonops.contract import STOPPED_EXIT_CODE
    from reasonops.controller.builders import build_job
    from reasonops.controller.settings import Settings
    from reasonops.train.launch import run_group

    stopped = "from reasonops.errors import Stopped\nfrom reasonops.train.launch import mark_worker_failed\n"
    both = (stopped + "mark_worker_failed(Stopped(5, 'checkpoints/step-5'), {**os.environ, 'LOCAL_RANK': '0'})\n"
            "mark_worker_failed(Stopped(5, 'checkpoints/step-5'), {**os.environ, 'LOCAL_RANK': '1'}); sys.exit(1)")
    assert run_group(_worker(both), nproc_per_node=2) == STOPPED_EXIT_CODE
    own = (stopped + "mark_worker_failed(Stopped(5, None), {**os.environ, 'LOCAL_RANK': '0'})\n"
           "mark_worker_failed(ValueError('bad batch'), {**os.environ, 'LOCAL_RANK': '1'}); sys.exit(1)")
    assert run_group(_worker(own), nproc_per_node=2) == 1
    # torchrun waits for its signalled workers' checkpoint longer than any grace period (its default: 30 s)
    waits = "mark_worker_done(); sys.exit(0 if os.environ['TORCH_ELASTIC_SHUTDOWN_TIMEOUT'] == '86400' else 9)"
    assert run_group(_worker(waits), nproc_per_node=1) == 0
    body = {"kind": "FineTuneJob", "metadata": {"name": "ft", "namespace": "n", "uid": "u"}}
    job = build_job(body, Settings(), name="ft-r", labels={}, pod_spec={}, resources=None, suspend=False,
                    backoff_limit=3, active_deadline=None, completions=2)
    ignored = [code for rule in job["spec"]["podFailurePolicy"]["rules"] if rule["action"] == "Ignore"
               for code in rule.get("onExitCodes", {}).get("values", [])]
    assert STOPPED_EXIT_CODE in ignored


def test_the_first_stop_signal_is_noted_and_a_second_ends_the_process():
    from reasonops.train.preemption import StopSignal

    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # the handler runs between bytecodes
        assert stop.received == signal.SIGTERM and stop.requested
    assert signal.getsignal(signal.SIGTERM) is before
    twice = ("import os, signal, time\nfrom reasonops.train.preemption import StopSignal\n"
             "with StopSignal() as stop:\n"
             "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.1); print('noted', stop.received, flush=True)\n"
             "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(5); print('still running')\n")
    proc = subprocess.run([sys.executable, "-c", twice], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGTERM and proc.stdout == f"noted {int(signal.SIGTERM)}\n", proc
    assert "second signal SIGTERM: stopping now, without a checkpoint" in proc.stderr


class _PartitionWriter:
    """In place of DeepSpeed's engine (checkpoints.save_checkpoint only calls its save): writes one optimizer
    partition, each write its own bytes, and `during_write` half-way through it."""

    def __init__(self, during_write=lambda: None) -> None:
        self.during_write = during_write

    def save_checkpoint(self, directory: str, tag: str, client_state: dict) -> None:
        path = Path(directory, tag)
        path.mkdir(parents=True)
        with open(path / "zero_pp_rank_0_mp_rank_00_optim_states.pt", "wb") as out:
            out.write(f"first half of step {client_state['trainer']['step']}".encode())
            out.flush()
            self.during_write()
            out.write(b", second half")


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _stop_checkpoint_ended_by(root: Path, moment: str, signum: int) -> None:
    """In a child process: a stop was asked for (the first SIGTERM), the checkpoint of step 6 is written, and
    `signum` arrives at `moment` of it: a second SIGTERM, or the kubelet's SIGKILL when the grace period ran out."""
    from reasonops.train import checkpoints as ckpt
    from reasonops.train.preemption import StopSignal

    def arrives() -> None:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler runs between bytecodes: the process ends here

    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert stop.requested
        if moment == "marker":  # after the rename, before its `_COMPLETE`
            ckpt.write_marker = lambda directory: arrives()
        ckpt.save_checkpoint(_PartitionWriter(arrives if moment == "partitions" else lambda: None), root,
                             ckpt.TrainerState(step=6), rank=0, keep=1,
                             export=(lambda directory: arrives()) if moment == "export" else None)
    os._exit(0)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["second-signal", "grace-period-ran-out"])
@pytest.mark.parametrize("moment", ["partitions", "export", "marker"])
def test_a_stop_checkpoint_cut_short_leaves_the_previous_complete_one_and_it_is_resumed_from(tmp_path, moment, signum):
    """A second SIGTERM or the grace period's SIGKILL while the stop checkpoint of step 6 is written, whatever it
    is writing: the process ends, step-4 (the only one kept: keep 1) stays complete with every byte, and it is the
    checkpoint a restart resumes from, once the start removed what step 6 left."""
    import multiprocessing

    from reasonops.train import checkpoints as ckpt

    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(_PartitionWriter(), root, ckpt.TrainerState(step=4), rank=0, keep=1)
    before = _files(root / "step-4")
    # spawned, not forked: a fork of this process, which other tests left with threads (OpenMP, torch), can hang
    # in the child on a lock a thread held at the fork (it did in CI: the child never reached the checkpoint)
    child = multiprocessing.get_context("spawn").Process(target=_stop_checkpoint_ended_by, args=(root, moment, signum))
    child.start()
    child.join(60)
    if child.exitcode is None:  # still running: never leave it behind (the suite's exit would wait for it)
        child.kill()
        child.join()
        pytest.fail(f"the child neither finished nor was ended by signal {signum} within 60 s")
    assert child.exitcode == -signum
    assert [step for step, _ in ckpt.complete_checkpoints(root)] == [4]
    assert ckpt.latest_checkpoint(root) == root / "step-4" and _files(root / "step-4") == before
    assert {p.name for p in root.iterdir()} == {"step-4", "step-6" if moment == "marker" else ".tmp-step-6"}
    ckpt.remove_incomplete(root)  # what a restarted run does first
    assert [p.name for p in root.iterdir()] == ["step-4"] and _files(root / "step-4") == before


def test_a_stop_checkpoint_not_cut_short_replaces_the_previous_one(tmp_path):
    """The control of the test above: left to finish, the step-6 checkpoint is complete and, with keep 1, step-4
    goes (after step 6's marker, never before)."""
    from reasonops.train import checkpoints as ckpt

    root = tmp_path / "checkpoints"
    for step in (4, 6):
        ckpt.save_checkpoint(_PartitionWriter(), root, ckpt.TrainerState(step=step), rank=0, keep=1)
    assert [p.name for p in root.iterdir()] == ["step-6"] and ckpt.latest_checkpoint(root) == root / "step-6"
    assert _files(root / "step-6")["state/zero_pp_rank_0_mp_rank_00_optim_states.pt"] == b"first half of step 6, second half"
