"""Retrieval: Tatoeba, BUCC 2018, LAReQA (XQuAD-R), Mewsli-X.

No training, as in XTREME: a text is embedded by mean-pooling one middle layer of the encoder,
and candidates are ranked by cosine similarity. The pretrained (or intermediate-trained)
encoder is evaluated as it is, so these tasks have no train split. Ties rank the candidate
that comes first in the pool first, so every score is reproducible.

An example is one query: {"id", "text", "gold": ids of its right candidates, "pool"}; the
examples of one language share one `Pool`, the candidates they are ranked against.

One concern, the retrieval family: its four tasks share the pooling, the ranking and the scores."""

from __future__ import annotations

import csv
import json
import weakref
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from xfer.loop import autocast, device_of
from xfer.paths import data_dir, package_file, root
from xfer.tasks.base import DataError, Task, open_utf8, pad, read_json


@dataclass(frozen=True, eq=False)
class Pool:
    """Candidates: ids, and texts (a string, or a (text, text_pair) tuple)."""

    ids: tuple[str, ...]
    texts: tuple


# -- embedding ----------------------------------------------------------------------------

def tokenize(texts, tokenizer, max_length: int, id_map=None) -> list[dict]:
    from xfer.models.vocab import apply_id_map

    texts = list(texts)
    if texts and isinstance(texts[0], tuple):
        enc = tokenizer([a for a, _ in texts], [b for _, b in texts], truncation=True, max_length=max_length)
    else:
        enc = tokenizer(texts, truncation=True, max_length=max_length)
    ids = enc["input_ids"] if id_map is None else apply_id_map(enc["input_ids"], id_map)
    return [{"input_ids": list(i)} for i in ids]


@torch.inference_mode()
def embed(model, features: list[dict], pad_id: int, batch_size: int, layer: int | None = None,
          pooling: str = "mean") -> torch.Tensor:
    """L2-normalised sentence vectors (CPU, float32) from hidden layer `layer` (0 = embeddings;
    default: the middle one), mean-pooled over real tokens or taken at the first token ("cls")."""
    if layer is None:
        layer = model.config.num_hidden_layers // 2
    model.eval()
    out = torch.zeros(len(features), model.config.hidden_size)
    order = np.argsort([len(f["input_ids"]) for f in features], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = {k: v.to(device_of(model)) for k, v in pad([features[i] for i in rows], pad_id).items()}
        with autocast(model):
            hidden = model(**batch, output_hidden_states=True).hidden_states[layer].float()
        if pooling == "mean":
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vec = (hidden * mask).sum(1) / mask.sum(1)
        elif pooling == "cls":
            vec = hidden[:, 0]
        else:
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        out[torch.as_tensor(rows)] = torch.nn.functional.normalize(vec, dim=-1).cpu()
    return out


_POOLS = weakref.WeakKeyDictionary()  # Pool -> (model ref, parameter versions, settings, vectors)


def pool_vectors(model, pool: Pool, tokenizer, max_length, batch_size, id_map, layer, pooling) -> torch.Tensor:
    """The pool's vectors, kept while the same unchanged model evaluates the languages that share
    the pool (LAReQA's 13k sentences, Mewsli-X's 1M entities); any weight update re-embeds."""
    version = sum(p._version for p in model.parameters())
    settings = (max_length, id(id_map), layer, pooling)
    hit = _POOLS.get(pool)
    if hit and hit[0]() is model and hit[1] == version and hit[2] == settings:
        return hit[3]
    vectors = embed(model, tokenize(pool.texts, tokenizer, max_length, id_map), tokenizer.pad_token_id, batch_size,
                    layer, pooling)
    _POOLS[pool] = (weakref.ref(model), version, settings, vectors)
    return vectors


# -- ranking and metrics ------------------------------------------------------------------

def top_k(queries: torch.Tensor, candidates: torch.Tensor, k: int, block: int | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """The k best candidates of each query by dot product, as (scores, indices), best first;
    equal scores rank the lower candidate index first. Computed in blocks of queries (by
    default about 2^26 similarities at a time: 64 queries against Mewsli-X's 1M entities)."""
    k = min(k, len(candidates))
    block = block or max(1, (1 << 26) // max(1, len(candidates)))
    scores, indices = [], []
    for start in range(0, len(queries), block):
        sim = queries[start:start + block] @ candidates.T
        kth = torch.topk(sim, k, dim=1).values[:, -1:]
        rows, cols = (sim >= kth).nonzero(as_tuple=True)  # the top k and everything tied with the k-th
        vals = sim[rows, cols].numpy()
        rows, cols = rows.numpy(), cols.numpy()
        order = np.lexsort((cols, -vals, rows))
        first = np.searchsorted(rows[order], np.arange(len(sim)))
        take = order[first[:, None] + np.arange(k)]
        scores.append(vals[take])
        indices.append(cols[take])
    return np.concatenate(scores), np.concatenate(indices)


def average_precision_at_k(ranked, relevant, k: int) -> float:
    """AP@k: the mean of precision@i over the ranks i <= k of relevant candidates, divided by
    min(|relevant|, k), the most hits k ranks can hold (LAReQA's and XTREME-R's mAP@20)."""
    relevant = set(relevant)
    hits, total = 0, 0.0
    for i, c in enumerate(list(ranked)[:k]):
        if c in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / min(len(relevant), k) if relevant else 0.0


def margin_mine(x: torch.Tensor, y: torch.Tensor, k: int = 4) -> list[tuple[int, int, float]]:
    """Bitext mining with the ratio margin (Artetxe & Schwenk 2019; LASER's mine_bitext,
    retrieval "max", as XTREME mines BUCC): score(x, y) = cos(x, y) divided by the mean cosine
    of each side's k nearest neighbours; each source and each target's best candidate are
    pooled, and pairs are kept best first while neither side is used yet."""
    x2y_sim, x2y_ind = top_k(x, y, k)
    y2x_sim, y2x_ind = top_k(y, x, k)
    x2y_mean, y2x_mean = x2y_sim.mean(1), y2x_sim.mean(1)
    fwd = x2y_sim / ((x2y_mean[:, None] + y2x_mean[x2y_ind]) / 2)
    bwd = y2x_sim / ((y2x_mean[:, None] + x2y_mean[y2x_ind]) / 2)
    src = np.concatenate([np.arange(len(x)), y2x_ind[np.arange(len(y)), bwd.argmax(1)]])
    trg = np.concatenate([x2y_ind[np.arange(len(x)), fwd.argmax(1)], np.arange(len(y))])
    score = np.concatenate([fwd.max(1), bwd.max(1)])
    pairs, seen_src, seen_trg = [], set(), set()
    for i in np.argsort(-score, kind="stable"):
        if src[i] not in seen_src and trg[i] not in seen_trg:
            seen_src.add(src[i])
            seen_trg.add(trg[i])
            pairs.append((int(src[i]), int(trg[i]), float(score[i])))
    return pairs


def best_threshold_f1(pairs: list[tuple], gold: set) -> dict:
    """Precision/recall/F1 (0-100) of the mined pairs above the threshold that maximises F1
    (XTREME's BUCC recipe: the threshold is tuned on the gold pairs it is scored against, so
    the figure is an upper bound unless the threshold is carried to unseen data). Thresholds
    lie between distinct scores: tied pairs are kept or dropped together."""
    pairs = sorted(pairs, key=lambda p: -p[2])
    best = {"f1": 0.0, "precision": 0.0, "recall": 0.0, "threshold": float(pairs[0][2]) + 1 if pairs else 0.0}
    correct = 0
    for n, (s, t, score) in enumerate(pairs, 1):
        correct += (s, t) in gold
        if n < len(pairs) and pairs[n][2] == score:
            continue  # the next pair ties: no threshold separates them
        if correct and gold:
            p, r = correct / n, correct / len(gold)
            f1 = 2 * p * r / (p + r)
            if 100 * f1 > best["f1"]:
                below = pairs[n][2] if n < len(pairs) else score - 1e-6
                best = {"f1": 100 * f1, "precision": 100 * p, "recall": 100 * r, "threshold": (score + below) / 2}
    return best


# -- tasks --------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetrievalTask(Task):
    scorer: str = "map"  # "accuracy" (top-1), "map" (mAP@k) or "mining" (BUCC F1)
    k: int = 20  # depth of mAP@k; for mining, the margin's number of neighbours
    layer: int | None = None  # hidden layer to pool; None: num_hidden_layers // 2
    pooling: str = "mean"
    splits: tuple[str, ...] = ("test",)
    hub_unusable: str = ""  # why the hub copy cannot give this task, if it cannot

    def check_split(self, split):
        if split == "train":
            raise DataError(f"task {self.name!r} is a retrieval task: retrieval tasks have no training data "
                            f"(the encoder is evaluated as it is); evaluate on: {', '.join(self.splits)}")
        super().check_split(split)
        if self.hub_unusable and not self.reads_local():  # no folder, or one without this task's files
            raise DataError(f"task {self.name!r}: {self.hub_unusable}; then set XFER_DATA_DIR")

    def build_model(self, encoder):
        from transformers import AutoModel

        return AutoModel.from_pretrained(encoder, output_hidden_states=True)

    def encode(self, examples, tokenizer, max_length, id_map=None):
        """Token ids of every query and candidate (what vocabulary trimming needs to keep)."""
        pools = {id(ex["pool"]): ex["pool"] for ex in examples}.values()
        texts = [ex["text"] for ex in examples]
        return tokenize(texts, tokenizer, max_length, id_map) + [
            f for pool in pools for f in tokenize(pool.texts, tokenizer, max_length, id_map)]

    def collate(self, features, pad_id):
        return pad(features, pad_id)

    def evaluate(self, model, examples, tokenizer, max_length, batch_size, id_map=None):
        pools = {id(ex["pool"]): ex["pool"] for ex in examples}
        if len(pools) != 1:
            raise ValueError(f"{self.name}: the examples of one evaluation must share one candidate pool, got {len(pools)}")
        pool = next(iter(pools.values()))
        queries = embed(model, tokenize([ex["text"] for ex in examples], tokenizer, max_length, id_map),
                        tokenizer.pad_token_id, batch_size, self.layer, self.pooling)
        cands = pool_vectors(model, pool, tokenizer, max_length, batch_size, id_map, self.layer, self.pooling)
        have = set(pool.ids)
        out = {"n_examples": len(examples), "pool_size": len(pool.ids),
               "queries_without_gold": sum(not have.intersection(ex["gold"]) for ex in examples)}
        if self.scorer == "mining":
            index = {c: j for j, c in enumerate(pool.ids)}
            gold = {(i, index[t]) for i, ex in enumerate(examples) for t in ex["gold"] if t in index}
            scores = best_threshold_f1(margin_mine(queries, cands, self.k), gold)
            return {"score": scores["f1"], **scores, "n_gold": len(gold), **out}
        _, ranked = top_k(queries, cands, 1 if self.scorer == "accuracy" else self.k)
        ids = np.asarray(pool.ids, dtype=object)
        if self.scorer == "accuracy":
            acc = 100 * float(np.mean([ids[r[0]] in ex["gold"] for r, ex in zip(ranked, examples)]))
            return {"score": acc, "accuracy": acc, **out}
        m = 100 * float(np.mean([average_precision_at_k(ids[r], ex["gold"], self.k) for r, ex in zip(ranked, examples)]))
        return {"score": m, f"map@{self.k}": m, **out}


# Tatoeba ------------------------------------------------------------------------------------

TATOEBA_INDIVIDUAL = {"cmn": "zho", "swh": "swa", "pes": "fas", "zsm": "msa"}  # LASER's codes -> macrolanguage


@cache
def iso639_3_to_1() -> dict[str, str]:
    """ISO 639-3 -> the project's ISO 639-1 codes (xfer/languages.csv, else the shared metadata)."""
    path = package_file("languages.csv")
    if not path.exists():
        path = root().parent / "shared" / "metadata" / "xtreme_r_languages.csv"
    with open(path, encoding="utf-8") as f:
        return {row["iso639_3"]: row["iso639_1"] for row in csv.DictReader(f)}


def from_tatoeba(code: str) -> str:
    """A Tatoeba (LASER) code as the project's language code; codes without one stay ISO 639-3."""
    return iso639_3_to_1().get(TATOEBA_INDIVIDUAL.get(code, code), code)


def to_tatoeba(lang: str) -> str:
    inverse = {v: k for k, v in iso639_3_to_1().items()}
    code = inverse.get(lang, lang)
    return {v: k for k, v in TATOEBA_INDIVIDUAL.items()}.get(code, code)


def pairs_to_examples(sources, targets) -> list[dict]:
    """Line-aligned translations: source i's one right candidate is target i."""
    pool = Pool(tuple(str(i) for i in range(len(targets))), tuple(targets))
    return [{"id": str(i), "text": s, "gold": (str(i),), "pool": pool} for i, s in enumerate(sources)]


@dataclass(frozen=True)
class TatoebaTask(RetrievalTask):
    """xx -> English: each sentence's translation among the English side of its language's file."""

    def path(self, lang, split):
        return data_dir() / self.local.format(lang=to_tatoeba(lang), split=split)

    def languages(self, split):
        self.check_split(split)
        if not self.reads_local():
            return list(self.languages_hint)
        have = {from_tatoeba(p.name.split(".")[1].split("-")[0])
                for p in (data_dir() / Path(self.local).parent).glob("tatoeba.*-eng.eng")}
        return sorted(have & set(self.languages_hint))  # the benchmark's languages, of the 112 the release has

    def read_file(self, path):
        read = lambda p: open_utf8(p).read().rstrip("\n").split("\n")
        src, eng = read(path), read(path.with_suffix(".eng"))
        if len(src) != len(eng):
            raise DataError(f"{path}: {len(src)} sentences but {len(eng)} English ones; the files must be line-aligned")
        return pairs_to_examples(src, eng)

    def read_hub(self, lang, split):
        import datasets

        ds = datasets.load_dataset(self.hub_id, self.hub_config.format(lang=to_tatoeba(lang)), split="validation")
        return pairs_to_examples(ds["source_sentence"], ds["target_sentence"])


# BUCC -------------------------------------------------------------------------------------

def read_tsv_sentences(path: Path, columns: int = 2) -> list[list[str]]:
    """Rows of `columns` tab-separated fields (`id<TAB>sentence`; a gold file's `id<TAB>id`)."""
    rows = []
    with open_utf8(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                row = line.rstrip("\n").split("\t", columns - 1)
                if len(row) != columns or not all(row):
                    raise DataError(f"{path}:{n}: {len(row)} tab-separated column(s); allowed: {columns} (id, text)")
                rows.append(row)
    return rows


@dataclass(frozen=True)
class BuccTask(RetrievalTask):
    """Mine the translation pairs hidden among two comparable corpora (xx and English)."""

    def languages(self, split):
        """Languages whose three files (xx side, English side, gold pairs) are all present."""
        self.check_split(split)
        if not self.reads_local():
            return list(self.languages_hint)
        gold = (data_dir() / Path(self.local).parent).glob(f"*-en.{split}.gold")
        langs = sorted(p.name.split("-")[0] for p in gold)
        return [l for l in langs if self.path(l, split).exists() and self.path(l, split).with_suffix(".en").exists()]

    def read_file(self, path):
        src, eng = dict(read_tsv_sentences(path)), dict(read_tsv_sentences(path.with_suffix(".en")))
        gold: dict[str, list[str]] = {}
        for s, t in read_tsv_sentences(path.with_suffix(".gold")):
            gold.setdefault(s, []).append(t.strip())
        pool = Pool(tuple(eng), tuple(eng.values()))
        return [{"id": i, "text": text, "gold": tuple(gold.get(i, ())), "pool": pool} for i, text in src.items()]


# LAReQA (XQuAD-R) -------------------------------------------------------------------------

@cache
def read_xquad_r(folder: Path) -> tuple[dict[str, list[tuple[str, str]]], dict[str, tuple[str, ...]], Pool]:
    """Questions per language, each question id's answer sentence in every language, and the
    pool: every sentence of every paragraph in every language (13,014 for XQuAD-R)."""
    questions, answers, ids, texts = {}, {}, [], []
    for path in sorted(folder.glob("*.json")):
        lang = path.stem
        data = read_json(path)["data"]
        questions[lang] = []
        for a, article in enumerate(data):
            for p, par in enumerate(article["paragraphs"]):
                base = f"{lang}/{a}/{p}/"
                ids += [base + str(s) for s in range(len(par["sentences"]))]
                texts += par["sentences"]
                for qa in par["qas"]:
                    start = qa["answers"][0]["answer_start"]
                    s = next(i for i, (b, e) in enumerate(par["sentence_breaks"]) if b <= start < e)
                    answers.setdefault(qa["id"], []).append(base + str(s))
                    questions[lang].append((qa["id"], qa["question"]))
    return questions, {q: tuple(a) for q, a in answers.items()}, Pool(tuple(ids), tuple(texts))


@dataclass(frozen=True)
class LareqaTask(RetrievalTask):
    """A question in one language; its answer sentence in all 11 languages is right, out of
    the sentences of all 11 languages (the candidates are the sentences alone, without their
    paragraph)."""

    def files(self, lang, split):
        return sorted(self.path(lang, split).parent.glob("*.json"))  # the pool holds every language

    def read_file(self, path):
        questions, answers, pool = read_xquad_r(Path(path).parent)
        return [{"id": q, "text": text, "gold": answers[q], "pool": pool} for q, text in questions[Path(path).stem]]


# Mewsli-X -----------------------------------------------------------------------------------

@cache
def read_entities(path: Path) -> Pool:
    """candidate_set_entities.jsonl: one entity per line, represented by its description."""
    ids, texts = [], []
    with open_utf8(path) as f:
        for line in f:
            e = json.loads(line)
            ids.append(e["entity_id"])
            texts.append(e["description"])
    return Pool(tuple(ids), tuple(texts))


def read_mentions(path: Path, pool: Pool) -> list[dict]:
    """wikinews_mentions-<split>.jsonl: an article per line with its mentions; a query is
    (mention text, the sentence that holds it)."""
    examples = []
    with open_utf8(path) as f:
        for line in f:
            doc = json.loads(line)
            ctx = doc["context"]
            if not ctx["text"]:
                raise DataError(f"{path}: article {ctx['document_id']} has no text; this is the 'no_text' release: "
                                "run Mewsli-X's get-mewsli-x.sh, which restores the text from WikiNews dumps")
            for m in doc["mentions"]:
                span = m["mention_span"]
                if ctx["text"][span["start"]:span["end"]] != span["text"]:
                    raise DataError(f"{path}: mention {m['example_id']} does not match its offsets in the text")
                sentence = next((ctx["text"][s["start"]:s["end"]] for s in ctx["sentence_spans"]
                                 if s["start"] <= span["start"] and span["end"] <= s["end"]), ctx["text"])
                examples.append({"id": m["example_id"], "lang": ctx["language"], "text": (span["text"], sentence),
                                 "gold": (m["entity_id"],), "pool": pool})
    return examples


@dataclass(frozen=True)
class MewsliXTask(RetrievalTask):
    """Entity linking as retrieval: a WikiNews mention's entity among ~1M entity descriptions
    in 50 languages. One file holds every language; the candidates sit beside it."""

    splits: tuple[str, ...] = ("dev", "test")
    candidates: str = "candidate_set_entities.jsonl"

    def languages(self, split):
        self.check_split(split)
        if not self.reads_local():
            return list(self.languages_hint)
        path = self.path("", split)
        if not path.exists():
            return []
        with open_utf8(path) as f:
            return sorted({json.loads(line)["context"]["language"] for line in f if line.strip()})

    def files(self, lang, split):
        return [self.path(lang, split), self.path(lang, split).parent / self.candidates]

    def load(self, lang, split):
        return [ex for ex in super().load(lang, split) if ex["lang"] == lang]

    def read_file(self, path):
        return read_mentions(Path(path), read_entities(Path(path).parent / self.candidates))


TATOEBA_LANGS = ("af", "ar", "bg", "bn", "de", "el", "es", "et", "eu", "fa", "fi", "fr", "he", "hi", "hu", "id", "it",
                 "ja", "jv", "ka", "kk", "ko", "ml", "mr", "nl", "pt", "ru", "sw", "ta", "te", "th", "tl", "tr", "ur",
                 "vi", "zh")  # XTREME's 36, those on the hub

RETRIEVAL_TASKS = [
    TatoebaTask(
        name="tatoeba", family="retrieval", metric="accuracy", scorer="accuracy",
        local="xtreme/tatoeba/tatoeba.{lang}-eng.{lang}", hub_id="google/xtreme", hub_config="tatoeba.{lang}",
        languages_hint=TATOEBA_LANGS,
        description="Tatoeba (LASER test sets): xx->en nearest-neighbour accuracy over up to 1,000 pairs",
    ),
    BuccTask(
        name="bucc", family="retrieval", metric="f1", scorer="mining", k=4, splits=("dev", "test"),
        local="xtreme/bucc2018/{lang}-en.{split}.{lang}", hub_id="google/xtreme", hub_config="bucc18.{lang}",
        languages_hint=("de", "fr", "ru", "zh"),
        hub_unusable="the hub copy (google/xtreme bucc18.*) keeps only the gold pairs, without the unpaired sentences "
                     "that make BUCC a mining task; put the BUCC 2018 files <l>-en.<split>.{<l>,en,gold} under "
                     "<data>/xtreme/bucc2018",
        description="BUCC 2018 bitext mining: ratio-margin (k=4) mining, F1 at the best threshold on the scored data",
    ),
    LareqaTask(
        name="lareqa", family="retrieval", metric="map@20", local="xtreme/lareqa_xquad_r/{lang}.json",
        hub_id="google-research-datasets/xquad_r", languages_hint=("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr",
                                                                    "vi", "zh"),
        hub_unusable="the hub copy has no sentence segmentation, so the candidate sentences cannot be rebuilt; put "
                     "the XQuAD-R release's <lang>.json files under <data>/xtreme/lareqa_xquad_r",
        description="LAReQA XQuAD-R: answer-sentence retrieval from the 11-language pool, mAP@20",
    ),
    MewsliXTask(
        name="mewslix", family="retrieval", metric="map@20", local="xtreme_r/mewslix/wikinews_mentions-{split}.jsonl",
        hub_id="google-research/google-research:dense_representations_for_entity_retrieval/mel (get-mewsli-x.sh)",
        languages_hint=("ar", "de", "en", "es", "fa", "ja", "pl", "ro", "ta", "tr", "uk"),
        hub_unusable="Mewsli-X is not on the Hugging Face hub: run get-mewsli-x.sh from google-research/"
                     "dense_representations_for_entity_retrieval/mel and copy mewsli_x/output/dataset/*.jsonl "
                     "to <data>/xtreme_r/mewslix",
        description="Mewsli-X: WikiNews entity mentions linked among 1M multilingual entity descriptions, mAP@20",
    ),
]
