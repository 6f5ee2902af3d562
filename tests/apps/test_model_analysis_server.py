"""`dual-attention serve`, started on a free loopback port: the OpenAI-compatible completions API
(greedy completions equal the library's generate; the SSE stream concatenates to the same text),
the visualization endpoint, bad requests (each its 4xx, the server still answering /health), and
8 clients x 20 requests at once."""

import json
import os
import threading
from pathlib import Path

import pytest
import torch

from model_analysis_support import require_apps, Server, make_dat, sse_events

require_apps()

GPT2_VOCAB = 50304  # GPT-2's 50257 tokens padded, as nanoGPT-style checkpoints are


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served-dat")
    model = make_dat(folder, vocab_size=GPT2_VOCAB, d_model=32, n_layers=2, n_heads_sa=2,
                     n_heads_ra=2, n_symbols=16, max_block_size=64)
    with Server(folder, "--max-body-bytes", 100_000, "--max-prompt-bytes", 2000,
                "--max-tokens", 256) as server:
        status, health = server.json("GET", "/health")
        assert status == 200, server.stderr
        yield server, model, str(folder)


def decoder(server):
    """Token ids -> text as the server decodes them: GPT-2's tokenizer, or (in a build without a
    tokenizer) the ids, space-separated."""
    _, health = server.json("GET", "/health")
    if health.get("tokenizer", "token ids") == "token ids":
        return lambda ids: "".join(f" {i}" for i in ids), None
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    data = Path(os.environ.get("DUAL_ATTENTION_DATA_DIR", Path.home() / ".cache" / "dual-attention"))
    enc = tiktoken.Encoding("gpt2", pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
                            mergeable_ranks=load_tiktoken_bpe(str(data / "gpt2.tiktoken")),
                            special_tokens={"<|endoftext|>": 50256})
    # Ids beyond the tokenizer's vocabulary (the model's is padded to 50304) decode to U+FFFD.
    return (lambda ids: b"".join(enc.decode_single_token_bytes(i) if i < enc.n_vocab else "\ufffd".encode()
                                 for i in ids).decode("utf-8", errors="replace")), 50256


def library_greedy(model, prompt, n, eot):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), n, top_k=1)[0, len(prompt):].tolist()
    return out[:out.index(eot)] if eot is not None and eot in out else out


PROMPTS = [[464, 3290, 318, 257], [40, 1101, 257, 1621, 11], [15496, 995], [1212, 318, 257, 1332],
           [31373, 11, 995, 0], [32, 890, 640, 2084], [818, 262, 3726], [7454, 2402, 257, 640]]


def test_health_and_models(served):
    server, _, folder = served
    status, health = server.json("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == folder
    status, models = server.json("GET", "/v1/models")
    assert status == 200 and models["data"][0]["id"] == folder
    status, headers, page = server.request("GET", "/")
    assert status == 200 and b"generate-form" in page and headers["Content-Type"].startswith("text/html")


def test_greedy_completion_equals_the_librarys_generate(served):
    server, model, folder = served
    decode, eot = decoder(server)
    prompt = PROMPTS[0]
    expected = library_greedy(model, prompt, 12, eot)
    status, body = server.json("POST", "/v1/completions",
                               {"model": folder, "prompt": prompt, "max_tokens": 12, "temperature": 0, "seed": 3})
    assert status == 200, body
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == decode(expected)
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": len(expected),
                             "total_tokens": 4 + len(expected)}
    assert body["choices"][0]["finish_reason"] == ("length" if len(expected) == 12 else "stop")


def test_stream_concatenates_to_the_same_text(served):
    server, _, _ = served
    request = {"prompt": PROMPTS[1], "max_tokens": 10, "temperature": 0}
    _, whole = server.json("POST", "/v1/completions", request)
    status, headers, data = server.request("POST", "/v1/completions", dict(request, stream=True))
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(data)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == whole["usage"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_seeded_sampling_is_reproducible_and_stop_cuts_the_text(served):
    server, _, _ = served
    request = {"prompt": PROMPTS[2], "max_tokens": 16, "temperature": 1.0, "top_k": 40, "top_p": 0.9, "seed": 7}
    _, a = server.json("POST", "/v1/completions", request)
    _, b = server.json("POST", "/v1/completions", request)
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    text = a["choices"][0]["text"]
    if len(text) >= 4:
        stop = text[2:4]
        _, c = server.json("POST", "/v1/completions", dict(request, stop=[stop]))
        assert c["choices"][0]["text"] == text[:text.index(stop)]
        assert c["choices"][0]["finish_reason"] == "stop"


def test_visualize_endpoint(served):
    server, _, _ = served
    status, payload = server.json("POST", "/v1/visualize", {"prompt": PROMPTS[3]})
    assert status == 200
    assert payload["format"] == "dual-attention-viz/1" and payload["n_layers"] == 2
    assert len(payload["tokens"]) == 4 and payload["heads"] == {"sa": 2, "ra": 2, "rel": 2}


BAD = [
    ("bad JSON", dict(raw=b'{"prompt": [1, 2'), 400, None),
    ("not an object", dict(body=[1, 2]), 400, None),
    ("unknown model", dict(body={"model": "nobody/nothing", "prompt": [1]}), 404, "model"),
    ("wrong type", dict(body={"prompt": [1], "max_tokens": "ten"}), 400, "max_tokens"),
    ("wrong prompt type", dict(body={"prompt": {"a": 1}}), 400, "prompt"),
    ("negative max_tokens", dict(body={"prompt": [1], "max_tokens": -1}), 400, "max_tokens"),
    ("max_tokens over the limit", dict(body={"prompt": [1], "max_tokens": 257}), 400, "max_tokens"),
    ("negative temperature", dict(body={"prompt": [1], "temperature": -0.5}), 400, "temperature"),
    ("top_p out of range", dict(body={"prompt": [1], "top_p": 1.5}), 400, "top_p"),
    ("prompt over the byte limit", dict(body={"prompt": "x" * 2001}), 400, "prompt"),
    ("prompt over the context", dict(body={"prompt": [1] * 65}), 400, "prompt"),
    ("token id outside the vocabulary", dict(body={"prompt": [GPT2_VOCAB]}), 400, "prompt"),
    ("missing prompt", dict(body={"max_tokens": 3}), 400, "prompt"),
    ("body over the size limit", dict(body={"prompt": "y" * 120_000}), 413, None),
]


@pytest.mark.parametrize("name,request_args,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_their_4xx_and_the_server_keeps_serving(served, name, request_args, status, param):
    server, _, _ = served
    got, headers, data = server.request("POST", "/v1/completions", request_args.get("body"),
                                        raw=request_args.get("raw"))
    assert got == status, (name, data)
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(data)["error"]
    assert error["message"] and error["type"]
    if param:
        assert error["param"] == param, error
    assert server.json("GET", "/health")[0] == 200


def test_unknown_endpoint_is_a_json_404(served):
    server, _, _ = served
    status, body = server.json("GET", "/v2/nothing")
    assert status == 404 and "no such endpoint" in body["error"]["message"]


def test_8_clients_x_20_requests_get_complete_correct_answers(served):
    server, model, _ = served
    decode, eot = decoder(server)
    expected = [decode(library_greedy(model, p, 6, eot)) for p in PROMPTS]
    failures, done = [], []

    def client(c):
        for r in range(20):
            stream = (r % 2 == 1)
            request = {"prompt": PROMPTS[c], "max_tokens": 6, "temperature": 0, "stream": stream}
            status, _, data = server.request("POST", "/v1/completions", request)
            if status != 200:
                failures.append((c, r, status, data[:200]))
                continue
            if stream:
                events = sse_events(data)
                text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
                complete = events[-1] == "[DONE]"
            else:
                text, complete = json.loads(data)["choices"][0]["text"], True
            if text != expected[c] or not complete:
                failures.append((c, r, text, expected[c]))
            done.append(1)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, failures[:5]
    assert len(done) == 160
    assert server.json("GET", "/health")[0] == 200
