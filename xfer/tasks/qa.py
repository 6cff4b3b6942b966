"""Extractive QA: XQuAD, MLQA, TyDiQA-GoldP (targets); SQuAD v1.1 and v2.0 (intermediate).

As HF's run_qa and XTREME: the question and a window of the context go in together; contexts
longer than a window are cut into overlapping windows; a window that does not hold the answer
is labelled with the CLS position. A prediction is the best span (at most 30 tokens) over all
windows of a question, cut from the context by the tokenizer's character offsets, and is
scored with the benchmark's own EM / F1 (SQuAD v1.1's normalisation, or MLQA's for MLQA)."""

from __future__ import annotations

import logging
import re
import string
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from xfer.loop import autocast, device_of
from xfer.tasks.base import DataError, Task, language_name, pad, read_json

log = logging.getLogger(__name__)

MAX_ANSWER_TOKENS = 30  # run_qa's max_answer_length


# -- reading ------------------------------------------------------------------------------

def read_squad(path: Path) -> list[dict]:
    """SQuAD v1.1 / v2.0 JSON (also XQuAD, MLQA, TyDiQA-GoldP): one example per question.
    Blank answers (SQuAD v2's unanswerable questions, or labels removed) become no answer."""
    try:
        return [{"id": qa["id"], "title": article.get("title", ""), "context": p["context"],
                 "question": qa["question"],
                 "answers": [{"text": a["text"], "answer_start": a["answer_start"]} for a in qa["answers"] if a["text"]]}
                for article in read_json(path)["data"] for p in article["paragraphs"] for qa in p["qas"]]
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not in the SQuAD layout (data / paragraphs / qas; {type(e).__name__}: {e})") from None


# -- metrics ------------------------------------------------------------------------------

SQUAD_PUNCT = set(string.punctuation)


@cache
def mlqa_punct() -> frozenset:
    """Every Unicode punctuation character, plus ASCII's (MLQA's PUNCT); built on first use."""
    return frozenset(chr(i) for i in range(sys.maxunicode + 1)
                     if unicodedata.category(chr(i)).startswith("P")) | SQUAD_PUNCT


MLQA_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "ar": r"\sال^|ال",  # as in mlqa_evaluation_v1.py: removes every "ال", also inside words
    "hi": None, "zh": None,  # no articles
}
CJK = re.compile(r"[\u4e00-\u9fa5]")


def squad_normalize(text: str, lang: str | None = None) -> str:
    """SQuAD v1.1's normalize_answer: lower, drop ASCII punctuation and English articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in SQUAD_PUNCT)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def mixed_segmentation(text: str) -> list[str]:
    """MLQA's Chinese tokenisation: every CJK character (and punctuation mark) is a token,
    other runs are split on whitespace."""
    tokens, run, punct = [], "", mlqa_punct()
    for ch in text:
        if CJK.search(ch) or ch in punct:
            tokens += run.split() + [ch]
            run = ""
        else:
            run += ch
    return tokens + run.split()


def mlqa_normalize(text: str, lang: str | None) -> str:
    """mlqa_evaluation_v1.py's normalize_answer: Unicode punctuation, the language's articles,
    and character-level tokens for Chinese."""
    if lang not in MLQA_ARTICLES:
        raise ValueError(f"MLQA normalisation is defined for {', '.join(MLQA_ARTICLES)}; got language {lang!r}")
    punct = mlqa_punct()
    text = "".join(ch for ch in text.lower() if ch not in punct)
    if MLQA_ARTICLES[lang]:
        text = re.sub(MLQA_ARTICLES[lang], " ", text)
    tokens = mixed_segmentation(text) if lang == "zh" else text.split()
    return " ".join(t for t in tokens if t.strip())


NORMALIZERS = {"squad": squad_normalize, "mlqa": mlqa_normalize}


def token_f1(pred: list[str], gold: list[str]) -> float:
    """SQuAD's bag-of-tokens F1; an empty side scores 1 only against another empty one (v2.0)."""
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    p, r = same / len(pred), same / len(gold)
    return 2 * p * r / (p + r)


def qa_scores(predictions: list[str], answers: list[list[str]], langs: list[str | None], scheme: str = "squad") -> dict:
    """EM and F1 (0-100), each the best over a question's gold answers; no gold answer means
    the question is unanswerable and only the empty prediction is right (SQuAD v2.0)."""
    norm = NORMALIZERS[scheme]
    em = f1 = 0.0
    for pred, golds, lang in zip(predictions, answers, langs):
        p = norm(pred, lang)
        g = [norm(a, lang) for a in golds] or [""]
        em += max(float(p == x) for x in g)
        f1 += max(token_f1(p.split(), x.split()) for x in g)
    n = max(1, len(predictions))
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n}


# -- windows ------------------------------------------------------------------------------

def answer_tokens(offsets: list, start: int, end: int) -> tuple[int, int] | None:
    """First and last context token of the character span [start, end) in one window, or None
    when the window does not hold all of it. `offsets` is None off the context."""
    ctx = [i for i, o in enumerate(offsets) if o is not None]
    if not ctx or offsets[ctx[0]][0] > start or offsets[ctx[-1]][1] < end:
        return None
    first = next(i for i in ctx if offsets[i][1] > start)
    last = next(i for i in reversed(ctx) if offsets[i][0] < end)
    return first, last


def span_text(context: str, offsets: list, first: int, last: int) -> str:
    """Context characters of tokens first..last (sentencepiece offsets include the leading space)."""
    return context[offsets[first][0]:offsets[last][1]].strip()


@dataclass(frozen=True)
class QATask(Task):
    scheme: str = "squad"  # answer normalisation: "squad" (v1.1) or "mlqa"
    unanswerable: bool = False  # questions without an answer are part of the task (SQuAD v2.0)
    local_unlabelled: tuple[str, ...] = ()  # splits whose local (XTREME-released) files have the answers removed
    hub_splits: tuple[tuple[str, str], ...] = (("dev", "validation"),)
    hub_id_prefix: bool = False  # hub split mixes languages; an id starts with the language's name

    # -- data -----------------------------------------------------------------------------
    def check_split(self, split):
        super().check_split(split)
        if split in self.local_unlabelled and self.reads_local():
            raise DataError(f"task {self.name!r}: the local {split!r} files are XTREME's release, whose answers are "
                            f"removed (every answer blank); set XFER_DATA_DIR=hub to read the labelled hub split "
                            f"({self.hub_id}), or evaluate on another task")

    def languages(self, split):
        if "{lang}" in self.local or not self.reads_local():
            return super().languages(split)
        self.check_split(split)
        return list(self.languages_hint) if self.path("", split).exists() else []  # an English-only corpus

    def load(self, lang, split):
        """Examples carry their language: MLQA's normalisation depends on it."""
        return [dict(ex, lang=lang) for ex in super().load(lang, split)]

    def read_file(self, path):
        examples = read_squad(path)
        missing = sum(not ex["answers"] for ex in examples)
        if missing and not self.unanswerable:
            withheld = " (every answer is blank: this copy has its labels removed)" if missing == len(examples) else ""
            raise DataError(f"{path}: {missing} of {len(examples)} questions have no answer{withheld}; "
                            f"task {self.name!r} needs one for each")
        return examples

    def hub_split(self, split):
        return dict(self.hub_splits).get(split, split)

    def read_hub(self, lang, split):
        if not self.hub_id_prefix:
            return super().read_hub(lang, split)
        import datasets

        prefix = language_name(lang).lower() + "-"
        ds = datasets.load_dataset(self.hub_id, self.hub_config, split=self.hub_split(split))
        return [self.from_hub(row) for row in ds.filter(lambda r: r["id"].startswith(prefix))]

    def from_hub(self, row):
        a = row["answers"]
        return {"id": row["id"], "title": row.get("title", ""), "context": row["context"], "question": row["question"],
                "answers": [{"text": t, "answer_start": s} for t, s in zip(a["text"], a["answer_start"]) if t]}

    # -- model ----------------------------------------------------------------------------
    def build_model(self, encoder):
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(encoder, num_labels=2)  # start and end logits

    def windows(self, examples, tokenizer, max_length, id_map=None) -> tuple[list[dict], list[str]]:
        """Every window of every example, labelled with the answer's token span (CLS when the
        window lacks it), and each example's alignment status for its first answer: "ok",
        "misaligned" (answer_start does not point at the text), "outside" (no window holds
        it whole) or "inexact" (a token boundary falls inside the answer)."""
        from xfer.models.vocab import apply_id_map

        stride, max_query = max_length // 3, max_length // 4  # 128 and 96 at run_qa's 384
        questions = [ex["question"].lstrip() for ex in examples]
        q_offsets = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        questions = [q if len(o) <= max_query else q[:o[max_query - 1][1]] for q, o in zip(questions, q_offsets)]
        enc = tokenizer(questions, [ex["context"] for ex in examples], truncation="only_second", max_length=max_length,
                        stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)
        ids = enc["input_ids"] if id_map is None else apply_id_map(enc["input_ids"], id_map)
        status = ["outside" if ex["answers"] else "ok" for ex in examples]
        features = []
        for w, i in enumerate(enc["overflow_to_sample_mapping"]):
            ex = examples[i]
            seq = enc.sequence_ids(w)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][w], seq)]
            label = None
            if ex["answers"]:
                text, start = ex["answers"][0]["text"], ex["answers"][0]["answer_start"]
                if ex["context"][start:start + len(text)] != text:
                    status[i] = "misaligned"
                else:
                    label = answer_tokens(offsets, start, start + len(text))
                    if label and status[i] != "ok":
                        status[i] = "ok" if span_text(ex["context"], offsets, *label) == text.strip() else "inexact"
            first, last = label or (0, 0)
            features.append({"input_ids": list(ids[w]), "start_positions": first, "end_positions": last,
                             "offsets": offsets, "example": i})
        return features, status

    def encode(self, examples, tokenizer, max_length, id_map=None):
        features, status = self.windows(examples, tokenizer, max_length, id_map)
        counts = Counter(status)
        if set(counts) - {"ok"}:
            log.warning("%s: answer alignment over %d examples: %s (misaligned: left out of training; inexact: "
                        "trained on the covering tokens; outside: every window labelled CLS)",
                        self.name, len(examples), dict(counts))
        return [f for f in features if status[f["example"]] != "misaligned"]

    def collate(self, features, pad_id):
        return {**pad(features, pad_id), "start_positions": torch.tensor([f["start_positions"] for f in features]),
                "end_positions": torch.tensor([f["end_positions"] for f in features])}

    @torch.inference_mode()
    def evaluate(self, model, examples, tokenizer, max_length, batch_size, id_map=None):
        features, status = self.windows(examples, tokenizer, max_length, id_map)
        order = np.argsort([len(f["input_ids"]) for f in features], kind="stable")
        span_score = np.full(len(features), -np.inf)
        null_score = np.zeros(len(features))
        spans = [(0, 0)] * len(features)
        model.eval()
        dev = device_of(model)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            chunk = [features[i] for i in rows]
            batch = self.collate(chunk, tokenizer.pad_token_id)
            with autocast(model):
                out = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev))
            s, e = out.start_logits.float(), out.end_logits.float()
            n = s.shape[1]
            ctx = torch.zeros_like(s, dtype=torch.bool)
            for r, f in enumerate(chunk):
                ctx[r, :len(f["offsets"])] = torch.tensor([o is not None for o in f["offsets"]])
            null = s[:, 0] + e[:, 0]
            s, e = s.masked_fill(~ctx, -torch.inf), e.masked_fill(~ctx, -torch.inf)
            band = torch.ones(n, n, dtype=torch.bool, device=s.device).triu().tril(MAX_ANSWER_TOKENS - 1)
            best, flat = (s[:, :, None] + e[:, None, :]).masked_fill(~band, -torch.inf).flatten(1).max(1)
            best, flat, null = best.cpu(), flat.cpu(), null.cpu()
            for r, w in enumerate(rows):
                span_score[w], null_score[w] = best[r].item(), null[r].item()
                spans[w] = divmod(int(flat[r]), n)
        best_of = [(-np.inf, "")] * len(examples)
        min_null = [np.inf] * len(examples)
        for w, f in enumerate(features):  # window order: the first of equal scores wins
            i = f["example"]
            min_null[i] = min(min_null[i], null_score[w])
            if span_score[w] > best_of[i][0]:
                best_of[i] = (span_score[w], span_text(examples[i]["context"], f["offsets"], *spans[w]))
        preds = ["" if self.unanswerable and min_null[i] > score else text for i, (score, text) in enumerate(best_of)]
        scores = qa_scores(preds, [[a["text"] for a in ex["answers"]] for ex in examples],
                           [ex.get("lang") for ex in examples], self.scheme)
        counts = Counter(status)
        return {"score": scores["f1"], **scores, "n_examples": len(examples), "windows": len(features),
                "answers_misaligned": counts["misaligned"], "answers_inexact": counts["inexact"],
                "answers_outside_windows": counts["outside"]}


XQUAD_LANGS = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
MLQA_LANGS = ("ar", "de", "en", "es", "hi", "vi", "zh")
TYDIQA_LANGS = ("ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te")

QA_TASKS = [
    QATask(
        name="xquad", family="qa", metric="f1", local="xtreme/xquad/xquad.{lang}.json", hub_id="google/xtreme",
        hub_config="XQuAD.{lang}", splits=("test",), hub_splits=(("test", "validation"),), languages_hint=XQUAD_LANGS,
        description="XQuAD: 240 SQuAD v1.1 dev paragraphs, 1,190 questions, professionally translated",
    ),
    QATask(
        name="mlqa", family="qa", metric="f1", scheme="mlqa", local="xtreme/mlqa_{split}/{lang}.json",
        hub_id="google/xtreme", hub_config="MLQA.{lang}.{lang}", splits=("dev", "test"), languages_hint=MLQA_LANGS,
        description="MLQA, same-language context and question, scored with MLQA's language-aware normalisation",
    ),
    QATask(
        name="tydiqa", family="qa", metric="f1",
        local="xtreme/tydiqa/tydiqa-goldp-v1.1-{split}/tydiqa.goldp.{lang}.{split}.json", hub_id="google/xtreme",
        hub_config="tydiqa", splits=("train", "dev"), local_unlabelled=("dev",), hub_id_prefix=True,
        languages_hint=TYDIQA_LANGS,
        description="TyDiQA-GoldP (gold passage); XTREME trains on English only and tests on the official dev set",
    ),
    QATask(
        name="squad", family="qa", metric="f1", local="extra/squad/{split}-v1.1.json", hub_id="rajpurkar/squad",
        hub_config="plain_text", splits=("train", "dev"), languages_hint=("en",),
        description="SQuAD v1.1 (English), the usual QA intermediate task",
    ),
    QATask(
        name="squad_v2", family="qa", metric="f1", unanswerable=True, local="extra/squad_v2/{split}-v2.0.json",
        hub_id="rajpurkar/squad_v2", hub_config="squad_v2", splits=("train", "dev"), languages_hint=("en",),
        description="SQuAD v2.0 (English): v1.1 plus unanswerable questions (answer = CLS)",
    ),
]
