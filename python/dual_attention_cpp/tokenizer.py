"""The GPT-2 byte-level BPE tokenizer in C++, with tiktoken's interface: ``Encoding`` has the
methods and properties of ``tiktoken.Encoding`` (same names, keywords, defaults and results), so
code written against tiktoken runs after an import swap::

    from dual_attention_cpp.tokenizer import get_encoding     # was: from tiktoken import ...
    enc = get_encoding("gpt2")
    ids = enc.encode("Hello world<|endoftext|>", allowed_special="all")   # [15496, 995, 50256]
    enc.decode(ids)

``Encoding.from_file(path)`` also reads Hugging Face ``tokenizer.json`` and GPT-2's
``vocab.json`` + ``merges.txt``. ``get_encoding("gpt2")`` looks for the files in this order: an
explicit ``path``; the environment variable ``DUAL_ATTENTION_GPT2_TOKENIZER``;
``$DUAL_ATTENTION_DATA_DIR/gpt2.tiktoken`` (default ``~/.cache/dual-attention/gpt2.tiktoken``);
the Hub repository ``openai-community/gpt2``'s ``tokenizer.json``, through the library's Hub client
and its cache (shared with huggingface_hub; offline works once cached).

Encoding and decoding run in C++ without the GIL; the batch methods use torch's intra-op threads
(``torch.set_num_threads``), and take ``num_threads`` only for compatibility. Errors: malformed
files and disallowed special tokens raise ValueError, ids that are not tokens KeyError (as
tiktoken's).
"""

from typing import AbstractSet, Collection, Dict, List, Literal, Optional, Sequence, Tuple, Union

from . import _C

__all__ = ["Encoding", "get_encoding", "list_encoding_names"]

_ENCODINGS = ("gpt2", "r50k_base")


def _str_without_surrogates(text: str) -> str:
    # tiktoken's repair of a str holding lone surrogates (which have no UTF-8 form).
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Encoding:
    """A byte-level BPE encoding with ``tiktoken.Encoding``'s interface.

    Parameters
    ----------
    name : str
        The encoding's name.
    pat_str : str
        The pre-tokenizer regex (tiktoken syntax; run on PCRE2).
    mergeable_ranks : dict[bytes, int]
        Token bytes -> rank (the id and the merge priority).
    special_tokens : dict[str, int]
        Special token -> id.
    explicit_n_vocab : int, optional
        If given, checked to equal the number of tokens and ``max_token_value + 1``.
    """

    def __init__(
        self,
        name: str,
        *,
        pat_str: str,
        mergeable_ranks: Dict[bytes, int],
        special_tokens: Dict[str, int],
        explicit_n_vocab: Optional[int] = None,
    ) -> None:
        core = _C.Tokenizer.from_ranks(dict(mergeable_ranks), pat_str, dict(special_tokens), name)
        if explicit_n_vocab is not None:
            count = len(mergeable_ranks) + len(special_tokens)
            if count != explicit_n_vocab or core.max_token_value != explicit_n_vocab - 1:
                raise ValueError(
                    f"Encoding: explicit_n_vocab is {explicit_n_vocab}, but there are {count} "
                    f"tokens and the largest id is {core.max_token_value}"
                )
        self._core = core

    @classmethod
    def _wrap(cls, core) -> "Encoding":
        self = cls.__new__(cls)
        self._core = core
        return self

    @classmethod
    def from_file(
        cls,
        path: str,
        *,
        pat_str: Optional[str] = None,
        special_tokens: Optional[Dict[str, int]] = None,
        name: Optional[str] = None,
    ) -> "Encoding":
        """Loads a tiktoken rank file, a Hugging Face tokenizer.json, or GPT-2's vocab.json +
        merges.txt (a folder holding either, or one of the two files). For a rank file,
        ``pat_str`` and ``special_tokens`` default to GPT-2's; a tokenizer.json carries its own
        (giving them is a ValueError)."""
        return cls._wrap(_C.Tokenizer.from_file(str(path), pat_str, special_tokens, name or ""))

    def __repr__(self) -> str:
        return f"<Encoding {self.name!r}>"

    # ---- properties ----
    @property
    def name(self) -> str:
        return self._core.name

    @property
    def n_vocab(self) -> int:
        """The largest token id plus one."""
        return self._core.n_vocab

    @property
    def max_token_value(self) -> int:
        return self._core.max_token_value

    @property
    def eot_token(self) -> int:
        """The id of ``<|endoftext|>`` (KeyError if the encoding has none)."""
        return self._core.special_tokens["<|endoftext|>"]

    @property
    def special_tokens_set(self) -> set:
        return set(self._core.special_tokens)

    @property
    def _special_tokens(self) -> Dict[str, int]:
        return dict(self._core.special_tokens)

    @property
    def _pat_str(self) -> str:
        return self._core.pat_str

    def is_special_token(self, token: int) -> bool:
        return token in self._core.special_tokens.values()

    # ---- encoding ----
    def encode_ordinary(self, text: str) -> List[int]:
        """Token ids of ``text``, special tokens encoded as ordinary text."""
        try:
            return self._core.encode_ordinary(text)
        except UnicodeEncodeError:
            return self._core.encode_ordinary(_str_without_surrogates(text))

    def encode(
        self,
        text: str,
        *,
        allowed_special: Union[Literal["all"], AbstractSet[str]] = set(),  # noqa: B006
        disallowed_special: Union[Literal["all"], Collection[str]] = "all",
    ) -> List[int]:
        """Token ids of ``text``. Special tokens in ``allowed_special`` become their ids; text
        matching one in ``disallowed_special`` (by default every special token not allowed)
        raises ValueError."""
        try:
            return self._core.encode(text, allowed_special, disallowed_special)
        except UnicodeEncodeError:
            text = _str_without_surrogates(text)
            return self._core.encode(text, allowed_special, disallowed_special)

    def encode_ordinary_batch(self, text: List[str], *, num_threads: int = 8) -> List[List[int]]:
        """encode_ordinary of each text, in parallel over torch's intra-op threads."""
        try:
            return self._core.encode_ordinary_batch(text)
        except UnicodeEncodeError:
            return self._core.encode_ordinary_batch([_valid(t) for t in text])

    def encode_batch(
        self,
        text: List[str],
        *,
        num_threads: int = 8,
        allowed_special: Union[Literal["all"], AbstractSet[str]] = set(),  # noqa: B006
        disallowed_special: Union[Literal["all"], Collection[str]] = "all",
    ) -> List[List[int]]:
        """encode of each text, in parallel over torch's intra-op threads."""
        try:
            return self._core.encode_batch(text, allowed_special, disallowed_special)
        except UnicodeEncodeError:
            texts = [_valid(t) for t in text]
            return self._core.encode_batch(texts, allowed_special, disallowed_special)

    def encode_single_token(self, text_or_bytes: Union[str, bytes]) -> int:
        """The id of one token, given as its bytes or text (a special token by name)."""
        if isinstance(text_or_bytes, str):
            text_or_bytes = text_or_bytes.encode("utf-8")
        return self._core.encode_single_token(text_or_bytes)

    # ---- decoding ----
    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        return self._core.decode_bytes(tokens)

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        """The text of ``tokens``; invalid UTF-8 handled as ``bytes.decode(errors=errors)``."""
        if errors == "replace":
            return self._core.decode(tokens)
        return self._core.decode_bytes(tokens).decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, token: int) -> bytes:
        return self._core.decode_single_token_bytes(token)

    def decode_tokens_bytes(self, tokens: Sequence[int]) -> List[bytes]:
        return [self._core.decode_single_token_bytes(t) for t in tokens]

    def decode_with_offsets(self, tokens: Sequence[int]) -> Tuple[str, List[int]]:
        """The text (strict UTF-8) and, per token, the index of the character it starts in (a
        token that starts inside a character counts from that character)."""
        pieces = self.decode_tokens_bytes(tokens)
        offsets, chars = [], 0
        for piece in pieces:
            continues = bool(piece) and 0x80 <= piece[0] < 0xC0  # starts mid-character
            offsets.append(max(0, chars - continues))
            chars += sum(1 for b in piece if not 0x80 <= b < 0xC0)
        return b"".join(pieces).decode("utf-8", errors="strict"), offsets

    def encode_to_numpy(
        self,
        text: str,
        *,
        allowed_special: Union[Literal["all"], AbstractSet[str]] = set(),  # noqa: B006
        disallowed_special: Union[Literal["all"], Collection[str]] = "all",
    ):
        """encode, as a numpy array of uint32."""
        import numpy as np

        ids = self.encode(text, allowed_special=allowed_special,
                          disallowed_special=disallowed_special)
        return np.array(ids, dtype=np.uint32)

    def decode_batch(
        self, batch: Sequence[Sequence[int]], *, errors: str = "replace", num_threads: int = 8
    ) -> List[str]:
        if errors == "replace":
            return self._core.decode_batch(batch)
        return [b.decode("utf-8", errors=errors) for b in self._core.decode_bytes_batch(batch)]

    def decode_bytes_batch(
        self, batch: Sequence[Sequence[int]], *, num_threads: int = 8
    ) -> List[bytes]:
        return self._core.decode_bytes_batch(batch)

    def token_byte_values(self) -> List[bytes]:
        """The bytes of every ordinary token, sorted."""
        special = set(self._core.special_tokens.values())
        return sorted(
            self._core.decode_single_token_bytes(i)
            for i in range(self.n_vocab)
            if i not in special and self._core.contains(i)
        )


def _valid(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _str_without_surrogates(text)


def get_encoding(encoding_name: str = "gpt2", path: Optional[str] = None) -> "Encoding":
    """The GPT-2 encoding (``"gpt2"``, alias ``"r50k_base"``), from the first of: ``path``;
    ``$DUAL_ATTENTION_GPT2_TOKENIZER``; ``$DUAL_ATTENTION_DATA_DIR/gpt2.tiktoken``; the Hub's
    ``openai-community/gpt2`` tokenizer.json (cached). Loaded once per file."""
    return Encoding._wrap(
        _C.Tokenizer.get_encoding(encoding_name, None if path is None else str(path))
    )


def list_encoding_names() -> List[str]:
    return list(_ENCODINGS)
