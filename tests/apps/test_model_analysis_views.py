"""`dual-attention viz` and dual_attention_cpp.model_analysis.views: the page is well-formed HTML,
self-contained (no external resource), holds every layer, head and relation of the model with
values equal to the intermediate results within the uint8 quantisation step, and a 24-layer model
on 256 tokens stays under 10 MB."""

import html.parser
import re

import numpy as np
import pytest
import torch

from dual_attention_cpp.model_analysis import datlm_utils, views

from model_analysis_support import (require_apps, make_dat, page_payload, payload_bytes, payload_matrix,
                                    run_cli)

require_apps()

VOID = {"meta", "link", "input", "br", "img", "hr", "source", "wbr", "col", "area", "base"}


class TagChecker(html.parser.HTMLParser):
    """Balanced tags, and every resource inline (no src= or href= leading elsewhere)."""

    def __init__(self):
        super().__init__()
        self.stack, self.problems, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.problems.append(f"<{tag} {key}={attrs[key]!r}>: not self-contained")
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> does not close <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def check_page(text):
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert not checker.problems, checker.problems
    assert checker.stack == [], f"unclosed tags: {checker.stack}"
    assert text.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?://", text), "the page refers to the network"
    for element in ("view", "what", "layer", "processors", "scale", "rel-head", "view-area"):
        assert element in checker.ids, f"no #{element}"
    return page_payload(text)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small-dat")
    model = make_dat(folder, n_layers=3, n_heads_sa=2, n_heads_ra=2, ra_kwargs=dict(n_relations=4))
    return folder, model


def test_viz_page_holds_every_layer_head_and_relation(small, tmp_path):
    folder, model = small
    ids = [5, 17, 3, 60, 22, 9, 41, 0, 33, 12]
    out = tmp_path / "viz.html"
    result = run_cli("viz", folder, "--tokens", ",".join(map(str, ids)), "-o", out, "--title", "a <test>")
    assert result.returncode == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert "<title>a &lt;test&gt;</title>" in text
    payload = check_page(text)
    assert payload["n_layers"] == 3 and payload["heads"] == {"sa": 2, "ra": 2, "rel": 4}
    assert payload["levels"] == {"sa": 256, "ra": 256, "rel": 256}
    assert payload["tokens"] == [str(i) for i in ids] or len(payload["tokens"]) == len(ids)

    blob = payload_bytes(payload)
    assert len(blob) == payload["raw_bytes"]
    with torch.no_grad():
        _, results = datlm_utils.datlm_forward_w_intermediate_results(model, torch.tensor([ids]))
    n = len(ids)
    mask = np.tril(np.ones((n, n), dtype=bool))
    for layer in range(3):
        expected = {
            "sa": results["sa_attn_scores"][layer][0].numpy(),
            "ra": results["ra_attn_scores"][layer][0].numpy(),
            "rel": results["ra_rels"][layer][0].permute(2, 0, 1).numpy(),
        }
        for kind, heads in expected.items():
            assert len(payload["matrices"][kind][layer]) == heads.shape[0]
            for h in range(heads.shape[0]):
                _, lo, hi = payload["matrices"][kind][layer][h]
                got = payload_matrix(payload, blob, kind, layer, h)
                err = np.abs(got - heads[h])[mask].max()
                step = (hi - lo) / (payload["levels"][kind] - 1)
                assert err <= step / 2 + 1e-6, f"{kind} layer {layer} head {h}: {err}"
                assert np.all(got[~mask] == 0)
        # Symbol assignment: the top symbols of each token and head, weights to 1/255.
        weights = results["symbol_attn_scores"][layer][0]  # [heads, n, n_symbols]
        k = payload["symbols"]["k"]
        offset = payload["symbols"]["layers"][layer]
        records = np.frombuffer(blob, dtype=np.uint8, count=weights.shape[0] * n * k * 3,
                                offset=offset).reshape(weights.shape[0], n, k, 3)
        top = torch.topk(weights, k, -1)
        stored_ids = records[..., 0].astype(int) + 256 * records[..., 1].astype(int)
        stored_w = records[..., 2] / 255
        assert np.abs(stored_w - top.values.numpy()).max() <= 0.5 / 255 + 1e-6
        np.testing.assert_array_equal(stored_ids[..., 0], top.indices[..., 0].numpy())


def test_python_helper_returns_the_same_page(small):
    folder, model = small
    ids = [1, 2, 3, 4, 5]
    page = views.visualization_html(model, token_ids=ids, tokens=list("abcde"), name="m", title="t")
    payload = check_page(page)
    assert payload["tokens"] == list("abcde") and payload["model"] == "m"
    result = views.visualization_payload(model, token_ids=ids, tokens=list("abcde"), name="m")
    assert result["blob"] == payload["blob"]
    with pytest.raises(ValueError, match="exactly one of text and token_ids"):
        views.visualization_payload(model)
    with pytest.raises(TypeError, match="DualAttnTransformerLM or TransformerLM"):
        views.visualization_payload(torch.nn.Linear(2, 2), token_ids=[1])


def test_viz_errors_are_clear(small, tmp_path):
    folder, _ = small
    result = run_cli("viz", folder, "--tokens", "1,2,999", "-o", tmp_path / "x.html")
    assert result.returncode == 2 and "'999' is not a token id in [0, 64)" in result.stderr
    result = run_cli("viz", folder, "--tokens", ",".join(["1"] * 33), "-o", tmp_path / "x.html")
    assert result.returncode == 2 and "more than the model's max_block_size 32" in result.stderr
    result = run_cli("viz", tmp_path / "missing", "--tokens", "1", "-o", tmp_path / "x.html")
    assert result.returncode == 1 and "missing" in result.stderr
    assert not (tmp_path / "x.html").exists()


def test_24_layers_on_256_tokens_stay_under_10_mb(tmp_path):
    # The shape of the published DAT-343M (24 layers, 8 + 8 heads, 8 relations, 1024 symbols in 8
    # heads) at a small width: the page's size depends on layers x heads x n x n only.
    make_dat(tmp_path / "m", vocab_size=512, d_model=32, n_layers=24, n_heads_sa=8, n_heads_ra=8,
             n_symbols=1024, symbol_heads=8, max_block_size=256)
    ids = torch.randint(0, 512, (256,), generator=torch.Generator().manual_seed(1)).tolist()
    out = tmp_path / "big.html"
    result = run_cli("viz", tmp_path / "m", "--tokens", ",".join(map(str, ids)), "-o", out)
    assert result.returncode == 0, result.stderr
    size = out.stat().st_size
    print(f"24 layers x (8 sa + 8 ra heads + 8 relations) x 256 tokens: {size / 1e6:.2f} MB")
    assert size < 10_000_000, f"{size} bytes"
    payload = check_page(out.read_text(encoding="utf-8"))
    assert payload["n_layers"] == 24 and payload["heads"] == {"sa": 8, "ra": 8, "rel": 8}
    assert payload["levels"] == {"sa": 256, "ra": 256, "rel": 64}
    assert all(len(payload["matrices"][k][l]) == 8 for k in ("sa", "ra", "rel") for l in range(24))
