import textwrap

import pytest
import torch

from xfer.config import ModelConfig, TrainConfig
from xfer.models import build_scratch, load_tokenizer
from xfer.paths import data_dir
from xfer.loop import train


@pytest.fixture(scope="session")
def data():
    """The real benchmark files (the Makefile unpacks ../shared/data into data/raw)."""
    folder = data_dir()
    if folder is None:
        pytest.fail("no data folder: run `make data` or set XFER_DATA_DIR to the unpacked ../shared/data")
    return folder


MICRO = """
name: micro
report_dir: {report}
seeds: [1]
model:
  source: scratch
  name: tiny
  scratch: {{hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}}
  trim_vocab: true
intermediate:
  task: panx
  languages: [sw]
  sizes: [0, 60]
  train: {{lr: 1.0e-3, batch_size: 16, max_steps: {steps}, max_length: 48, save_every: 2}}
target:
  task: udpos
  language: en
  size: 80
  train: {{lr: 1.0e-3, batch_size: 16, max_steps: 4, max_length: 48, save_every: 2}}
evaluate:
  languages: [en, yo, wo]
  max_examples: 20
"""


@pytest.fixture
def micro_grid(tmp_path, monkeypatch, data):
    """A five-run grid in a private runs folder, for end-to-end runner tests."""
    monkeypatch.setenv("XFER_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("XFER_OUTPUT", str(tmp_path))  # its report_dir lies there, outside the project

    def make(steps=4, name="micro.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(MICRO.format(report=tmp_path / "report", steps=steps)))
        return path

    return make


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A tiny random encoder with the real XLM-R tokenizer."""
    folder = build_scratch(ModelConfig(source="scratch", name="t"), tmp_path_factory.mktemp("m"))
    return folder, load_tokenizer(folder)


def fit(task, model, features, pad_id) -> list[float]:
    """Ten full-batch steps on the head and layers (embeddings frozen, no dropout: fast, deterministic)."""
    model.get_input_embeddings().requires_grad_(False)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    cfg = TrainConfig(lr=3e-3, batch_size=len(features), max_steps=10, warmup_ratio=0.0, weight_decay=0.0)
    return train(model, features, lambda f: task.collate(f, pad_id), cfg, seed=0, progress=False)["losses"]
