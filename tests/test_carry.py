"""A study packed for a GPU machine fits its 64 MiB, and the model unpacked there is the one
the CPU path trims from the full checkpoint: same id map, same hidden states."""

from __future__ import annotations

import json
import textwrap
from functools import partial

import numpy as np
import pytest
import torch
from transformers import AutoModel

from xfer import carry
from xfer.config import load_grid
from xfer.models import e5, load_tokenizer, prepare
from xfer.models.vocab import apply_id_map, load_id_map
from xfer.data import data_token_ids
from xfer.grid.plan import plan

STUDY = """
name: carried
seeds: [1]
model: {{source: {source}, name: multilingual-e5-small, trim_vocab: true}}
intermediate:
  task: panx
  languages: [sw]
  sizes: [0, 100]
  train: {{lr: 1.0e-4, batch_size: 16, max_steps: 2, max_length: 48}}
target:
  task: udpos
  language: en
  size: 100
  train: {{lr: 1.0e-4, batch_size: 16, max_steps: 2, max_length: 48}}
evaluate: {{languages: [en, yo], max_examples: 20}}
"""


def study(tmp_path, source="e5"):
    path = tmp_path / f"{source}.yaml"
    path.write_text(textwrap.dedent(STUDY.format(source=source)))
    return path


def config(folder):
    return json.loads((folder / "config.json").read_text())


def hidden(folder, input_ids, attention_mask):
    model = AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def test_pack_fits_and_unpacks_to_the_cpu_checkpoint(tmp_path, monkeypatch, data):
    params = study(tmp_path)
    manifest = carry.pack(params, tmp_path / "pack", preset=1)
    rows = manifest["kept_rows"]
    assert manifest["total"] <= carry.LIMIT and manifest["data_files"] == [
        "xtreme/panx/train-sw.tsv", "xtreme/udpos/test-en.tsv", "xtreme/udpos/test-yo.tsv", "xtreme/udpos/train-en.tsv"]
    model_bytes = manifest["sizes"]["model"]  # 12.4 MiB of layers + 216 bytes per kept row
    assert 216 * rows + 12.3 * 2**20 < model_bytes < 216 * rows + 12.5 * 2**20, (rows, model_bytes)

    # the CPU path: the full checkpoint, trimmed to the study's ids by prepare()
    planned = plan(params)
    grid, runs = planned.grid, planned.runs
    files = runs["pretrained"][0].params["data"]["files"]
    cpu, kept = prepare(grid.model, tmp_path / "cpu", partial(data_token_ids, files))
    assert kept + 5 >= rows >= kept  # the ids plus the specials not in the data

    # the GPU machine: nothing but the pack
    carried = carry.unpack(tmp_path / "pack", tmp_path / "data", tmp_path / "cache")
    monkeypatch.setenv("XFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XFER_DATA_DIR", str(tmp_path / "data"))
    assert e5.checkpoint() == carried  # found as the e5 model, not converted again
    gpu, _ = prepare(load_grid(params).model, tmp_path / "gpu", partial(data_token_ids, files))  # reads unpacked data

    id_map = load_id_map(cpu)
    np.testing.assert_array_equal(load_id_map(carried), id_map)
    np.testing.assert_array_equal(load_id_map(gpu), id_map)
    assert config(carried) == config(cpu)

    tok = load_tokenizer(cpu)
    texts = ["Mimi ni mwanafunzi wa chuo kikuu.", "The quick brown fox jumps over the lazy dog.", "Ọmọ náà ń sùn."]
    batch = tok(texts, padding=True, return_tensors="pt")
    ids = apply_id_map(batch["input_ids"], id_map)
    ref = hidden(cpu, ids, batch["attention_mask"])
    for folder in (carried, gpu):
        assert (hidden(folder, ids, batch["attention_mask"]) - ref).abs().max().item() <= 1e-5


def test_scratch_study_carries_data_only_and_the_limit_is_enforced(tmp_path, monkeypatch, data):
    manifest = carry.pack(study(tmp_path, "scratch"), tmp_path / "pack", preset=1)
    assert set(manifest["sizes"]) == {"data", "tokenizer"}  # the model is built there from the tokenizer
    monkeypatch.setattr(carry, "LIMIT", manifest["total"] - 1)
    with pytest.raises(carry.CarryError, match="more than"):
        carry.pack(study(tmp_path, "scratch"), tmp_path / "pack", preset=1)
