"""A small OpenAI-compatible server process that answers code-demo problems with programs (and the demo
benchmark's arithmetic problems with a boxed number).

    python tests/code_server.py MODE   # prints "PORT <n>" once listening

MODE ``correct``: every answer is the reference program. MODE ``mixed``: per problem, alternating answers
(reference, then wrong) for problems whose name has an even length, always a wrong or hostile program
(wrong output, infinite loop, reading the token) for the others. Stdlib only, so it is a real process with
real sockets and no test double inside the code under test. Arithmetic: ``correct`` answers every problem
right, ``mixed`` only those of even index (half of them), so the two compare as a better and a worse model.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from reasonops.benchmarks import load_benchmark
from reasonops.codebench import DEMO_SOLUTIONS

ITEMS = load_benchmark("code-demo")
HOSTILE = ("while True:\n    pass\n", "print(open('/var/run/secrets/kubernetes.io/serviceaccount/token').read())\n", "print(0)\n")
MODE = sys.argv[1] if len(sys.argv) > 1 else "correct"
counters: dict[str, itertools.count] = {}
lock = threading.Lock()


ARITHMETIC = load_benchmark("demo")


def answer(prompt: str) -> str:
    arithmetic = next((i for i in ARITHMETIC if i.question in prompt), None)
    if arithmetic is not None:
        right = MODE == "correct" or int(arithmetic.id.removeprefix("demo-")) % 2 == 0
        return f"The answer is \\boxed{{{arithmetic.answer if right else int(arithmetic.answer) + 1}}}."
    item = next((i for i in ITEMS if i.question in prompt), None)
    if item is None:
        return "I do not know this problem."
    solution = DEMO_SOLUTIONS[item.id]
    if MODE == "mixed":
        with lock:
            n = next(counters.setdefault(item.id, itertools.count()))
        name = item.id.removeprefix("code-demo-")
        if len(name) % 2 or n % 2:
            solution = HOSTILE[(n + len(name)) % len(HOSTILE)]
    return f"Let me think about it.\n\n```python\n{solution}```\n"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send({"object": "list", "data": [{"id": "coder", "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        text = answer(prompt)
        self._send({
            "id": "x", "object": "chat.completion", "model": body.get("model", "coder"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())},
        })


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()
