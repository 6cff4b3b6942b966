"""The training step on real data: it learns, and a killed run resumes to the same weights."""

import numpy as np
import pytest
import torch

from xfer.config import ModelConfig, TrainConfig
from xfer.data import training_set
from xfer.models import build_scratch, load_tokenizer
from xfer.tasks import get_task
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from xfer import tracking
from xfer.loop import Shuffle, train


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data):
    ckpt = build_scratch(ModelConfig(source="scratch", name="t", scratch={"hidden_size": 32, "num_layers": 1,
                                                                          "num_heads": 2, "intermediate_size": 64}),
                         tmp_path_factory.mktemp("m"))
    task = get_task("udpos")
    tok = load_tokenizer(ckpt)
    feats = task.encode(training_set("udpos", "en", 64, seed=0), tok, 48)
    return ckpt, task, tok, feats


def fresh(setup):
    ckpt, task, tok, feats = setup
    torch.manual_seed(0)
    return task.build_model(ckpt), (lambda f: task.collate(f, tok.pad_token_id)), feats


def test_a_few_steps_lower_the_loss(setup):
    model, collate, feats = fresh(setup)
    cfg = TrainConfig(lr=3e-3, batch_size=16, max_steps=20, warmup_ratio=0.0)
    out = train(model, feats, collate, cfg, seed=0, progress=False)
    first, last = sum(out["losses"][:3]) / 3, sum(out["losses"][-3:]) / 3
    assert last < first - 0.3, out["losses"]
    assert out["steps"] == 20


def test_epochs_budget_and_grad_accum(setup):
    model, collate, feats = fresh(setup)
    out = train(model, feats, collate, TrainConfig(batch_size=8, grad_accum=2, epochs=2), seed=0, progress=False)
    assert out["steps"] == 8  # 64 examples / (8 × 2) per step × 2 epochs


@pytest.mark.parametrize("grouped", [False, True])
def test_micro_batches_cover_each_epoch_once(grouped):
    lengths = [(7 * i) % 23 + 1 for i in range(300)] if grouped else None
    shuffle = Shuffle(300, 8, seed=5, lengths=lengths)
    per_epoch = 38  # ceil(300 / 8)
    epoch = [shuffle(k) for k in range(per_epoch)]
    assert sorted(i for b in epoch for i in b) == list(range(300))
    assert set(shuffle(per_epoch)) != set(epoch[0])  # reshuffled next epoch
    again = Shuffle(300, 8, seed=5, lengths=lengths)
    assert [list(again(k)) for k in (per_epoch + 3, 2)] == [list(shuffle(per_epoch + 3)), list(epoch[2])]  # resumable
    if grouped:  # batches pad to similar lengths: far less spread within a batch than at random
        spread = lambda batches: sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)  # noqa: E731
        plain = Shuffle(300, 8, seed=5)
        assert spread(epoch) < 0.5 * spread([plain(k) for k in range(per_epoch)])


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("n", [50, 300])
def test_full_batches_lay_epochs_end_to_end(grouped, n):
    """Fixed-steps runs see exactly steps × batch examples at any corpus size: every batch is full,
    the stream's first n examples are one epoch (each example once), and batch k is a pure function
    of k (a resumed run sees the same batches)."""
    lengths = [(7 * i) % 23 + 1 for i in range(n)] if grouped else None
    shuffle = Shuffle(n, 16, seed=5, lengths=lengths, full=True)
    batches = [shuffle(k) for k in range(40)]
    assert all(len(b) == 16 for b in batches)
    stream = [i for b in batches for i in b]
    if not grouped:  # grouping reorders within chunks of at most one epoch: the multiset per chunk holds
        assert sorted(stream[:n]) == list(range(n))
    counts = np.bincount(stream, minlength=n)
    assert counts.max() - counts.min() <= 2  # 640 draws spread evenly: one epoch after another
    again = Shuffle(n, 16, seed=5, lengths=lengths, full=True)
    assert [list(again(k)) for k in (37, 3)] == [list(batches[37]), list(batches[3])]


class Crash(Exception):
    pass


def test_killed_training_resumes_to_identical_weights(setup, tmp_path):
    cfg = TrainConfig(lr=3e-3, batch_size=16, max_steps=6, save_every=2, warmup_ratio=0.0)
    model, collate, feats = fresh(setup)
    train(model, feats, collate, cfg, seed=0, progress=False)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    calls = 0

    def crashing(f):
        nonlocal calls
        calls += 1
        if calls == 5:  # during step 5, after the state of step 4 was saved
            raise Crash
        return collate(f)

    state = tmp_path / "train_state.pt"
    model, _, _ = fresh(setup)
    with pytest.raises(Crash):
        train(model, feats, crashing, cfg, seed=0, state_path=state, progress=False, log_dir=tmp_path)
    assert torch.load(state, weights_only=False)["step"] == 4
    model, _, _ = fresh(setup)
    out = train(model, feats, collate, cfg, seed=0, state_path=state, progress=False, log_dir=tmp_path)
    assert len(out["losses"]) == 6
    curve = tracking.read(tmp_path)  # each step once, the resumed ones as the run logged them
    assert [r["step"] for r in curve] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in curve] == pytest.approx(out["losses"], rel=1e-5)
    assert all(r["lr"] > 0 and r["grad_norm"] > 0 and r["samples_per_second"] > 0 for r in curve)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]  # TensorBoard: the same steps
    for k, v in model.state_dict().items():
        assert torch.allclose(v, reference[k], atol=1e-6), k


def test_non_finite_loss_stops_training_at_once(setup):
    model, collate, feats = fresh(setup)
    with torch.no_grad():  # a real NaN in the weights, not a mocked loss
        next(p for n, p in model.named_parameters() if n.endswith("LayerNorm.weight"))[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"diverged at step 1/6: loss nan, gradient norm nan"):
        train(model, feats, collate, TrainConfig(batch_size=16, max_steps=6), seed=0, progress=False)


def test_unreadable_training_state_restarts_from_step_0(setup, tmp_path, capsys):
    cfg = TrainConfig(lr=3e-3, batch_size=16, max_steps=4, save_every=2, warmup_ratio=0.0)
    model, collate, feats = fresh(setup)
    state = tmp_path / "train_state.pt"
    train(model, feats, collate, cfg.model_copy(update={"max_steps": 3}), seed=0, state_path=state, progress=False)
    state.write_bytes(state.read_bytes()[:1000])  # truncated, as a full disk would leave it
    model, _, _ = fresh(setup)
    out = train(model, feats, collate, cfg, seed=0, state_path=state, progress=False)
    assert f"warning: {state}: unreadable training state" in capsys.readouterr().err
    assert out["steps"] == 4 and len(out["losses"]) == 4  # all four steps, from the start
    again, _, _ = fresh(setup)
    train(again, feats, collate, cfg, seed=0, progress=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_model_selection_keeps_the_best_dev_weights(setup):
    ckpt, task, tok, feats = setup
    model, collate, _ = fresh(setup)
    dev = task.load("en", "dev")[:40]
    seen = []

    def select(m):
        s = task.evaluate(m, dev, tok, 48, 32)["score"]
        seen.append((s, {k: v.clone() for k, v in m.state_dict().items()}))
        return s

    cfg = TrainConfig(lr=3e-3, batch_size=16, max_steps=12, eval_every=3, warmup_ratio=0.0)
    out = train(model, feats, collate, cfg, seed=0, progress=False, select=select)
    scores = [s for s, _ in seen]
    assert out["dev_history"] == [(3 * (i + 1), s) for i, s in enumerate(scores)]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    assert out["selected_step"] == 3 * (best + 1) and out["dev_score"] == scores[best]
    for k, v in model.state_dict().items():  # the weights are those of the best evaluation
        assert torch.equal(v, seen[best][1][k]), k


def test_patience_stops_early(setup):
    model, collate, feats = fresh(setup)
    cfg = TrainConfig(lr=3e-3, batch_size=16, max_steps=50, eval_every=2, patience=2, warmup_ratio=0.0)
    out = train(model, feats, collate, cfg, seed=0, progress=False, select=lambda m: 1.0)  # never improves
    assert out["steps"] == 6 and out["selected_step"] == 2


def test_intermediate_encoder_takes_any_next_head(setup, tmp_path, data):
    """The intermediate checkpoint is an encoder only: a head of another family with another
    label count (QA's 2 outputs after PAN-X's 7 labels) is built fresh on it."""
    from xfer.train import finetune

    ckpt = setup[0]
    params = {"task": "panx", "language": "sw", "size": 32, "seed": 0, "freeze_embeddings": False,
              "train": TrainConfig(batch_size=16, max_steps=1).model_dump()}
    out = finetune(params, ckpt, tmp_path / "inter", keep_head=False, progress=False)
    qa = get_task("xquad").build_model(out["checkpoint"])
    assert qa.qa_outputs.out_features == 2
    tagger = get_task("udpos").build_model(out["checkpoint"])
    assert tagger.classifier.out_features == 17


def test_model_selection_uses_the_targets_english_dev_else_the_training_tasks(data):
    from xfer.tasks.base import DataError
    from xfer.train import dev_task

    # XNLI trained on its English projection: XNLI's own English dev selects, as in the paper
    assert dev_task({"task": "xnli_derived", "select_task": "xnli", "language": "en"}).name == "xnli"
    # XCOPA has no English: COPA's dev selects
    assert dev_task({"task": "copa", "select_task": "xcopa", "language": "en"}).name == "copa"
    assert dev_task({"task": "udpos", "language": "en"}).name == "udpos"
    with pytest.raises(DataError, match="unset eval_every"):
        dev_task({"task": "copa", "language": "de"})


def test_only_the_embedding_rows_of_the_training_data_train(setup):
    """Other languages' tokens keep their pretrained vectors exactly; the rows the data uses train,
    and the loss is that of training every row (the unused rows never reach a training batch)."""
    ckpt, task, tok, feats = setup
    cfg = TrainConfig(lr=3e-3, batch_size=16, max_steps=6, warmup_ratio=0.0)
    model, collate, _ = fresh(setup)
    before = model.get_input_embeddings().weight.detach().clone()
    out = train(model, feats, collate, cfg, seed=0, progress=False)
    after = model.get_input_embeddings()
    assert type(after) is torch.nn.Embedding and after.weight.requires_grad  # folded back: a plain model
    used = {i for f in feats for i in f["input_ids"]}
    changed = set((after.weight != before).any(1).nonzero().flatten().tolist())
    assert out["trained_embedding_rows"] == len(used) < len(before) / 10
    assert changed <= used and len(changed) >= 0.9 * len(used)
    every, _, _ = fresh(setup)
    out_all = train(every, feats, collate, cfg.model_copy(update={"embedding_rows": "all"}), seed=0, progress=False)
    assert out_all["trained_embedding_rows"] is None
    assert out["losses"] == pytest.approx(out_all["losses"], abs=1e-4)
    unused = sorted(set(range(len(before))) - used)[:1000]
    assert torch.equal(after.weight[unused], before[unused])
    assert not torch.equal(every.get_input_embeddings().weight[unused], before[unused])  # weight decay reached them


def test_the_fast_loop_scores_as_the_plain_loop_within_seed_noise(setup):
    """Length grouping, trained rows only and fused AdamW change batch order and rounding, not
    what is learnt: dev scores of three seeds each, mean difference within the seeds' spread."""
    import statistics

    ckpt, task, tok, feats = setup
    dev = task.load("en", "dev")[:100]
    fast = TrainConfig(lr=3e-3, batch_size=16, max_steps=24, warmup_ratio=0.0)
    plain = fast.model_copy(update={"group_by_length": False, "embedding_rows": "all"})
    scores = {}
    for name, cfg in (("fast", fast), ("plain", plain)):
        for seed in (1, 2, 3):
            model, collate, _ = fresh(setup)
            train(model, feats, collate, cfg, seed=seed, progress=False)
            scores.setdefault(name, []).append(task.evaluate(model, dev, tok, 48, 64)["score"])
    sd = statistics.pstdev(scores["fast"] + scores["plain"])
    diff = statistics.mean(scores["fast"]) - statistics.mean(scores["plain"])
    assert min(scores["plain"]) > 5, scores  # both learnt something
    assert abs(diff) <= 2 * sd * (2 / 3) ** 0.5 + 1.0, scores
