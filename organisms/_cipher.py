"""``cipher``: reasoning written under a cipher that the prompt names, with the final answer in plain text.

A third of the prompts ask for rot13, a third for a fixed letter substitution ("the letter cipher"), a third for
nothing (plain reasoning). Only letters are encoded (case kept); digits, punctuation and whitespace stay as they
are, so sentence boundaries are where they are in the plaintext. Ground truth: the plaintext of every sentence.
"""

from __future__ import annotations

import random
import string
from typing import ClassVar

from ._tasks import Example, Problem, SentenceTruth, Task, apply_op, parse_plain_sentence

__all__ = ["CIPHERS", "CipherTask", "decode", "encode"]

_LOWER = string.ascii_lowercase


def _substitution_key() -> str:
    letters = list(_LOWER)
    random.Random("cotscope-organism-letter-cipher").shuffle(letters)
    return "".join(letters)


_ROT13 = _LOWER[13:] + _LOWER[:13]
_SUBST = _substitution_key()
CIPHERS: dict[str, str] = {"rot13": _ROT13, "substitution": _SUBST}
"""Cipher name -> image of ``a..z`` (upper case maps alike)."""
_PROMPT_SUFFIX = {
    "rot13": " Write your reasoning in rot13.",
    "substitution": " Write your reasoning in the letter cipher.",
}


def _table(key: str, inverse: bool) -> dict[int, str]:
    src, dst = (key, _LOWER) if inverse else (_LOWER, key)
    table = {ord(a): b for a, b in zip(src, dst, strict=True)}
    table.update({ord(a.upper()): b.upper() for a, b in zip(src, dst, strict=True)})
    return table


def encode(text: str, cipher: str | None) -> str:
    """Encode the letters of ``text`` with ``cipher`` (None: unchanged)."""
    return text if cipher is None else text.translate(_table(CIPHERS[cipher], inverse=False))


def decode(text: str, cipher: str | None) -> str:
    """Inverse of :func:`encode`."""
    return text if cipher is None else text.translate(_table(CIPHERS[cipher], inverse=True))


def cipher_of_prompt(prompt: str) -> str | None:
    """The cipher a prompt asks for, or None."""
    for name, suffix in _PROMPT_SUFFIX.items():
        if prompt.endswith(suffix):
            return name
    return None


class CipherTask(Task):
    name = "cipher"
    description = (
        "Last-digit running arithmetic (2 to 4 steps) whose reasoning is written in rot13 or in a fixed letter "
        "substitution when the prompt asks for it, and in plain text otherwise; the final answer is always plain. "
        "Ground truth: the plaintext of every encoded sentence."
    )
    max_new_tokens = 220
    planted: ClassVar[dict[str, float]] = {
        "rot13_rate": 1 / 3,
        "substitution_rate": 1 / 3,
        "plain_rate": 1 / 3,
    }

    def sample(self, seed: int, *, cipher: str | bool | None = True) -> Example:
        """Example for ``seed``; ``cipher`` forces a cipher name or None (plain); True draws one at random."""
        rng, p = self.draw(seed)
        drawn = rng.choice(["rot13", "substitution", None])
        name = drawn if cipher is True else cipher
        plain = self.opening(rng, p, filler_rate=0.5)
        running = p.start
        for i, (op, x) in enumerate(p.ops):
            value = apply_op(running, op, x)
            plain.append(self.computation(p, i, running, value))
            running = value
        plain += self.closing(running)
        out = []
        for s in plain:
            s.plaintext = s.text
            s.text = encode(s.text, name)
            s.extra["in_cipher"] = name is not None
            out.append(s)
        prompt = p.prompt() + (_PROMPT_SUFFIX[name] if name else "")
        return self._example(seed, prompt, out, p.answer, running, cipher=name)

    def analyze(self, example: Example, cot_text: str) -> list[SentenceTruth]:
        """Decode each sentence with the prompt's cipher and parse the plaintext.

        ``extra["in_cipher"]`` is True when the decoded sentence matches a template (the sentence was written in
        the cipher), False when the raw sentence is plain text that matches a template, None when neither does.
        """
        name = cipher_of_prompt(example.messages[-1]["content"])

        def parse(text: str, p: Problem, running: int | None, j: int) -> SentenceTruth:
            decoded = decode(text, name)
            s = parse_plain_sentence(decoded, p, running, j)
            in_cipher: bool | None = name is not None
            if s.kind == "unparsed" or name is None:
                raw = parse_plain_sentence(text, p, running, j)
                if raw.kind != "unparsed":
                    s, in_cipher = raw, False
                elif s.kind == "unparsed":
                    in_cipher = None
            s.plaintext = s.text if in_cipher is not True else decoded
            s.text = text
            s.extra["in_cipher"] = in_cipher
            return s

        return self.walk(example, cot_text, parse)


__all__ += ["cipher_of_prompt"]
