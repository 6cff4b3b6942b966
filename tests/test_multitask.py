"""Multi-task intermediate training: one shared encoder, tasks mixed by a distribution,
batches a pure function of (seed, k), and a real two-task run through `finetune`."""

import math

import pytest
import torch

from xfer.config import ModelConfig, TrainConfig
from xfer.loop import train
from xfer.models import build_scratch, load_tokenizer
from xfer.multitask import MultiTaskModel, TaskMixer, mixing_weights, task_names
from xfer.tasks import get_task
from xfer.train import finetune

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_scratch(ModelConfig(source="scratch", name="t", scratch=TINY), tmp_path_factory.mktemp("m"))


def test_the_encoder_is_one_set_of_parameters(ckpt):
    torch.manual_seed(0)
    model = MultiTaskModel.build([get_task("udpos"), get_task("panx")], ckpt)
    pos, ner = model.heads["udpos"], model.heads["panx"]
    assert pos.bert is ner.bert is model.base_model
    assert pos.bert.embeddings.word_embeddings.weight is ner.bert.embeddings.word_embeddings.weight
    encoder = {id(p) for p in model.base_model.parameters()}
    heads = [p for m in (pos, ner) for p in m.classifier.parameters()]
    assert len(list(model.parameters())) == len(encoder) + len(heads)  # the encoder counted once
    assert pos.classifier.out_features == 17 and ner.classifier.out_features == 7
    assert model.get_input_embeddings() is pos.bert.embeddings.word_embeddings


def test_task_names():
    assert task_names("udpos+panx") == ["udpos", "panx"]
    with pytest.raises(ValueError, match="distinct"):
        task_names("udpos+udpos")
    with pytest.raises(KeyError, match="registered tasks"):
        task_names("udpos+nope")


SIZES = {"a": 100, "b": 400, "c": 900}


@pytest.mark.parametrize("mixing, expected", [
    ("proportional", [100 / 1400, 400 / 1400, 900 / 1400]),
    ("uniform", [1 / 3, 1 / 3, 1 / 3]),
    ("temperature", [10 / 60, 20 / 60, 30 / 60]),  # T=2: sqrt(100), sqrt(400), sqrt(900) over their sum 60
])
def test_mixing_proportions_match_the_distribution(mixing, expected):
    p = mixing_weights(SIZES, mixing, temperature=2.0)
    assert list(p.values()) == pytest.approx(expected)
    mixer = TaskMixer({name: list(range(n)) for name, n in SIZES.items()}, p, batch_size=4, seed=3, group_by_length=False)
    draws = 20_000  # spans several blocks of task draws
    counts = {name: 0 for name in SIZES}
    for k in range(draws):
        counts[mixer(k)[0][0]] += 1
    for name, want in zip(SIZES, expected):  # within 4 standard errors
        assert abs(counts[name] / draws - want) < 4 * math.sqrt(want * (1 - want) / draws), counts


def test_temperature_one_is_proportional_and_bad_names_are_refused():
    assert mixing_weights(SIZES, "temperature", 1.0) == pytest.approx(mixing_weights(SIZES, "proportional"))
    with pytest.raises(ValueError, match="allowed: proportional, uniform, temperature"):
        mixing_weights(SIZES, "annealed")


def test_batches_are_a_pure_function_of_seed_and_k():
    features = {name: [{"id": f"{name}{i}"} for i in range(n)] for name, n in SIZES.items()}
    p = mixing_weights(SIZES, "uniform")
    a, b = TaskMixer(features, p, 8, 1, False), TaskMixer(features, p, 8, 1, False)
    late = 3 * TaskMixer.BLOCK + 17
    assert b(late) == a(late)  # a fresh mixer (a resumed run) jumps straight to step k
    assert [a(k) for k in range(40)] == [b(k) for k in range(40)]  # and backwards
    assert [a(k) for k in range(40)] != [TaskMixer(features, p, 8, 2, False)(k) for k in range(40)]
    for k in range(60):  # one task per micro-batch
        assert len({name for name, _ in a(k)}) == 1
    # within a task, micro-batches run through a shuffle of all its examples before repeating
    seen = [f["id"] for k in range(400) for name, f in a(k) if name == "a"][:100]
    assert sorted(seen) == sorted(f"a{i}" for i in range(100))


def mixed(ckpt, seed=0):
    tok = load_tokenizer(ckpt)
    tasks = {name: get_task(name) for name in ("udpos", "panx")}
    feats = {name: t.encode(t.load("en", "train")[:48], tok, 32) for name, t in tasks.items()}
    torch.manual_seed(seed)
    model = MultiTaskModel.build(tasks.values(), ckpt)
    mixer = TaskMixer(feats, mixing_weights({n: len(f) for n, f in feats.items()}), 16, seed)

    def collate(pairs):
        return {"task": pairs[0][0], **tasks[pairs[0][0]].collate([f for _, f in pairs], tok.pad_token_id)}

    return model, mixer, collate


def test_killed_multitask_training_resumes_to_identical_weights(ckpt, data, tmp_path):
    cfg = TrainConfig(lr=3e-3, batch_size=16, max_steps=4, save_every=2, warmup_ratio=0.0)
    model, mixer, collate = mixed(ckpt)
    train(model, mixer, collate, cfg, seed=0, progress=False, batches=mixer)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    calls = 0

    def crashing(pairs):
        nonlocal calls
        calls += 1
        if calls == 4:  # during step 4, after the state of step 2 was saved
            raise RuntimeError("killed")
        return collate(pairs)

    state = tmp_path / "train_state.pt"
    model, mixer, _ = mixed(ckpt)
    with pytest.raises(RuntimeError, match="killed"):
        train(model, mixer, crashing, cfg, seed=0, state_path=state, progress=False, batches=mixer)
    model, mixer, _ = mixed(ckpt)  # a fresh process: new model, new mixer
    train(model, mixer, collate, cfg, seed=0, state_path=state, progress=False, batches=mixer)
    for k, v in model.state_dict().items():
        assert torch.allclose(v, reference[k], atol=1e-6), k


def test_two_task_intermediate_run_through_finetune(ckpt, data, tmp_path):
    from transformers import AutoModelForTokenClassification

    params = {"task": "udpos+panx", "language": "en", "size": 64, "seed": 0, "mixing": "temperature",
              "temperature": 2.0,
              "train": {"lr": 5e-3, "batch_size": 16, "max_steps": 20, "max_length": 48, "warmup_ratio": 0.0,
                        "eval_every": 10, "dev_max_examples": 20}}
    metrics = finetune(params, ckpt, tmp_path / "run", keep_head=False, progress=False)
    assert metrics["n_train"] == 128 and metrics["n_train_per_task"] == {"udpos": 64, "panx": 64}
    assert metrics["mixing_p"] == pytest.approx({"udpos": 0.5, "panx": 0.5})
    assert [s for s, _ in metrics["dev_history"]] == [10, 20]  # mean dev score of the two tasks
    # each task's loss falls (the task of step k is the mixer's, which needs only names, p and seed)
    mixer = TaskMixer({"udpos": [], "panx": []}, metrics["mixing_p"], 16, seed=0)
    per_task = {name: [loss for k, loss in enumerate(metrics["losses"]) if mixer.task_of(k)[0] == name]
                for name in ("udpos", "panx")}
    assert all(len(losses) >= 3 and losses[-1] < losses[0] for losses in per_task.values()), per_task
    assert per_task["udpos"][-1] < per_task["udpos"][0] - 0.5, per_task

    # the checkpoint is a plain encoder: a single-task head loads on it, missing only its classifier
    head, info = AutoModelForTokenClassification.from_pretrained(metrics["checkpoint"], num_labels=3,
                                                                 output_loading_info=True)
    assert info["missing_keys"] and all(k.startswith("classifier.") for k in info["missing_keys"])
    before = AutoModelForTokenClassification.from_pretrained(ckpt, num_labels=3).bert
    assert not torch.equal(head.bert.embeddings.LayerNorm.weight, before.embeddings.LayerNorm.weight)  # trained
    assert get_task("udpos").build_model(metrics["checkpoint"]).num_labels == 17
    with pytest.raises(ValueError, match="intermediate phase only"):
        finetune(params, ckpt, tmp_path / "run2", keep_head=True, progress=False)
