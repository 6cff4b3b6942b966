"""A trimmed vocabulary changes nothing on kept ids: same hidden states, and id maps that compose."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (AutoModel, BertConfig, BertModel, PreTrainedTokenizerFast, XLMRobertaConfig,
                          XLMRobertaModel)

from xfer.models import e5
from xfer.models.vocab import ID_MAP, apply_id_map, load_id_map, trim

V, MASK, UNK, PAD = 1000, 999, 3, 1
SPECIALS = [0, 1, 2, 3, MASK]


@pytest.fixture(scope="module", params=["bert", "xlm-roberta"])
def tiny(request, tmp_path_factory):
    """A random 2-layer encoder with XLM-R's id layout: <s> <pad> </s> <unk> ... <mask>.

    XLM-R type too: it derives position ids from the pad id, which trimming must keep right."""
    folder = tmp_path_factory.mktemp("tiny")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, MASK)}, "<mask>": MASK}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, **e5.SPECIALS).save_pretrained(folder)
    torch.manual_seed(0)
    Config, Model = {"bert": (BertConfig, BertModel), "xlm-roberta": (XLMRobertaConfig, XLMRobertaModel)}[request.param]
    config = Config(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=64, pad_token_id=PAD)
    Model(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def hidden(folder, input_ids, attention_mask):
    model = AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def batch_of(ids, n=6, length=12, seed=0):
    """Sequences of the given ids between <s> and </s>, the last ones padded."""
    rng = np.random.default_rng(seed)
    input_ids = torch.full((n, length), PAD)
    mask = torch.zeros(n, length, dtype=torch.long)
    for row in range(n):
        k = length - 2 * (row % 3)
        input_ids[row, :k] = torch.as_tensor([0, *rng.choice(ids, k - 2), 2])
        mask[row, :k] = 1
    return input_ids, mask


def test_trimmed_model_matches_untrimmed(tiny, tmp_path):
    keep = np.random.default_rng(1).choice(np.arange(4, MASK), 150, replace=False)
    small = trim(tiny, tmp_path / "small", keep)
    assert AutoModel.from_pretrained(small).get_input_embeddings().weight.shape == (150 + 5, 32)
    input_ids, mask = batch_of(np.append(keep, MASK))
    full = hidden(tiny, input_ids, mask)
    trimmed = hidden(small, apply_id_map(input_ids, load_id_map(small)), mask)
    assert (full - trimmed).abs().max().item() <= 1e-5


def test_id_map_semantics(tiny, tmp_path):
    keep = [500, 10, 42, 10, 998]
    small = trim(tiny, tmp_path / "small", keep)
    id_map = load_id_map(small)
    assert load_id_map(tiny) is None
    assert id_map.dtype == np.int64 and id_map.shape == (V,)
    rows = sorted(set(keep) | set(SPECIALS))  # new rows follow the original order
    np.testing.assert_array_equal(id_map[rows], np.arange(len(rows)))
    dropped = np.setdiff1d(np.arange(V), rows)
    assert (id_map[dropped] == id_map[UNK]).all() and id_map[UNK] == UNK
    config = AutoModel.from_pretrained(small).config
    assert config.vocab_size == len(rows) and config.pad_token_id == id_map[PAD] == PAD
    old = AutoModel.from_pretrained(tiny).get_input_embeddings().weight
    new = AutoModel.from_pretrained(small).get_input_embeddings().weight
    torch.testing.assert_close(new, old[rows], rtol=0, atol=0)
    assert (small / "tokenizer.json").read_bytes() == (tiny / "tokenizer.json").read_bytes()
    with pytest.raises(ValueError):
        trim(tiny, tmp_path / "bad", [V])


def test_apply_id_map_on_lists_numpy_and_torch(tiny, tmp_path):
    id_map = load_id_map(trim(tiny, tmp_path / "small", [7, 9]))  # rows: 0 1 2 3 7 9 999
    ragged = [[0, 7, 9, 2], [0, 8, 2]]
    assert apply_id_map(ragged, id_map) == [[0, 4, 5, 2], [0, 3, 2]]
    assert apply_id_map([0, 999, 1], id_map) == [0, 6, 1]
    square = np.array([[0, 7, 9, 2], [0, 8, 2, 1]])
    np.testing.assert_array_equal(apply_id_map(square, id_map), [[0, 4, 5, 2], [0, 3, 2, 1]])
    mapped = apply_id_map(torch.as_tensor(square), id_map)
    assert isinstance(mapped, torch.Tensor) and mapped.tolist() == [[0, 4, 5, 2], [0, 3, 2, 1]]
    assert apply_id_map(ragged, None) is ragged
    with pytest.raises(ValueError):
        apply_id_map(np.array([-100, 7]), id_map)  # a label padding value is not a token id


def test_trimming_twice_composes(tiny, tmp_path):
    first, second = set(range(4, 400)), set(range(300, 600))
    once = trim(tiny, tmp_path / "once", first)
    twice = trim(once, tmp_path / "twice", second)  # ids are always ORIGINAL ids
    direct = trim(tiny, tmp_path / "direct", first & second)
    np.testing.assert_array_equal(load_id_map(twice), load_id_map(direct))
    id_map = load_id_map(twice)
    assert (id_map[list(second - first)] == id_map[UNK]).all()  # dropped by the first trim: stays <unk>
    assert len(set(id_map[sorted(first & second)])) == len(first & second)
    input_ids, mask = batch_of(np.array(sorted(first & second)))
    full = hidden(tiny, input_ids, mask)
    assert (full - hidden(twice, apply_id_map(input_ids, id_map), mask)).abs().max().item() <= 1e-5


def test_trimmed_e5_matches_full(tmp_path):
    """The real checkpoint: trimmed to the ids of a few sentences, it gives the same hidden states."""
    full = e5.checkpoint()
    tok = PreTrainedTokenizerFast(tokenizer_file=str(full / "tokenizer.json"), **e5.SPECIALS)
    texts = ["query: Der Hund schläft.", "query: Le chat dort sur la table.", "query: Ninyi mnapenda chakula hiki?"]
    batch = tok(texts, padding=True, return_tensors="pt")
    small = trim(full, tmp_path / "small", batch["input_ids"].unique().tolist())
    assert (small / ID_MAP).exists() and len(np.unique(load_id_map(small))) < 50
    ref = hidden(full, batch["input_ids"], batch["attention_mask"])
    got = hidden(small, apply_id_map(batch["input_ids"], load_id_map(small)), batch["attention_mask"])
    assert (ref - got).abs().max().item() <= 1e-5


def test_kept_ids_come_from_the_cache_only_for_the_same_bytes(scratch, data, tmp_path, monkeypatch):
    """The ids a trimmed vocabulary keeps are kept per data content and tokenizer: the cache gives
    what a fresh read gives, and a file changed under the same name is read again."""
    from xfer.data import data_token_ids

    _, tok = scratch
    monkeypatch.setenv("XFER_CACHE", str(tmp_path / "cache"))
    farm = tmp_path / "data" / "xtreme" / "panx"
    farm.mkdir(parents=True)
    (farm / "train-sw.tsv").write_bytes((data / "xtreme" / "panx" / "train-sw.tsv").read_bytes())
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path / "data"))
    files = [["panx", "sw", "train"]]
    fresh = data_token_ids(files, tok)
    assert len(list((tmp_path / "cache" / "token-ids").glob("*.npy"))) == 1
    assert np.array_equal(data_token_ids(files, tok), fresh)
    word = "Zyxwvutsrqponmlk"
    new = set(tok(word, add_special_tokens=False)["input_ids"]) - set(fresh.tolist())
    assert new  # pieces the corpus did not use
    with open(farm / "train-sw.tsv", "a") as f:
        f.write(f"\n{word}\tB-PER\n")
    changed = data_token_ids(files, tok)
    assert new <= set(changed.tolist()) and len(list((tmp_path / "cache" / "token-ids").glob("*.npy"))) == 2
