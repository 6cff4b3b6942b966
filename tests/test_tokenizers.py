"""Any checkpoint's own tokenizer survives all three phases: a from-scratch WordPiece (BERT-style)
tokenizer keeps `[PAD]` = 0 and its vocabulary size, instead of gaining XLM-R's `<pad>` as a new id."""

import json

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from xfer.grid import local, plan
from xfer.models import load_tokenizer
from xfer.paths import runs_dir
from xfer.tasks import get_task

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture
def wordpiece_bert(tmp_path, data):
    """A tiny BERT with a WordPiece tokenizer trained on real English UD-POS sentences."""
    text = [" ".join(ex["tokens"]) for ex in get_task("udpos").load("en", "train")[:2000]]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(text, trainers.WordPieceTrainer(vocab_size=800, special_tokens=SPECIAL))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    folder = tmp_path / "wordpiece-bert"
    fast.save_pretrained(folder)
    config = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, pad_token_id=0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder, len(fast)


def test_wordpiece_tokenizer_through_all_three_phases(micro_grid, wordpiece_bert):
    folder, vocab = wordpiece_bert
    loaded = load_tokenizer(folder)
    assert (loaded.pad_token, loaded.pad_token_id, len(loaded)) == ("[PAD]", 0, vocab)
    overrides = ["model.source=local", f"model.name={folder}", "model.trim_vocab=false"]
    counts = local.run_grid(plan.plan(micro_grid(), overrides))
    assert counts["failed"] == 0 and counts["ran"] == 6  # pretrained, 1 intermediate, 2 targets, 2 evaluations
    for run in [*(runs_dir() / "intermediate").glob("[!.]*"), *(runs_dir() / "target").glob("[!.]*")]:  # not lock files
        tok = load_tokenizer(run / "checkpoint")
        assert (tok.pad_token, tok.pad_token_id, len(tok)) == ("[PAD]", 0, vocab), run.name
        ids = tok("the cat sat")["input_ids"]
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    for run in (runs_dir() / "evaluate").glob("[!.]*"):
        scores = json.loads((run / "metrics.json").read_text())["scores"]
        assert set(scores) == {"en", "yo", "wo"} and all(0 <= s["score"] <= 100 for s in scores.values())


def test_a_tokenizer_is_loaded_once_per_process_and_no_call_leaks_into_the_next(scratch, tmp_path):
    """XLM-R's 250k pieces cost about 2 s a load, so a process keeps them; a call's truncation and
    padding must still not reach the next caller, nor the files a checkpoint saves."""
    from xfer.models import save_checkpoint

    folder, _ = scratch
    text = "the cat sat on the mat and then it sat on the hat"
    tok = load_tokenizer(folder)
    full = tok(text)["input_ids"]
    assert len(tok([text, "a"], truncation=True, max_length=4, padding="max_length")["input_ids"][1]) == 4
    again = load_tokenizer(folder)
    assert again is tok and again(text)["input_ids"] == full
    assert again.backend_tokenizer.truncation is None and again.backend_tokenizer.padding is None
    # a checkpoint saved after a truncating call stores the files it was loaded from, byte for byte
    tok(text, truncation=True, max_length=4)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                 intermediate_size=8))
    saved = save_checkpoint(model, tok, tmp_path / "ckpt")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (saved / name).read_bytes() == (folder / name).read_bytes(), name
    assert tok.backend_tokenizer.truncation["max_length"] == 4  # the caller's own state, given back
