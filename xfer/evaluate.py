"""Zero-shot evaluation: the English-trained target model, scored in every listed language.

Scores are saved per language as they finish, so an interrupted evaluation resumes where it stopped."""

from __future__ import annotations

from pathlib import Path

from xfer.data import evaluation_set
from xfer.loop import check_runner, device, set_threads
from xfer.models import load_tokenizer
from xfer.models.vocab import load_id_map
from xfer.paths import read_json, write_json
from xfer.record import write_metrics
from xfer.tasks import get_task


def zero_shot(params: dict, upstream: str | Path, run_dir: str | Path, max_length: int = 512) -> dict:
    run_dir = Path(run_dir)
    set_threads()
    task = get_task(params["task"])
    tokenizer = load_tokenizer(upstream)
    id_map = load_id_map(Path(upstream))
    model = task.build_model(upstream).to(device())
    partial = run_dir / "scores.partial.json"
    scores = read_json(partial) if partial.exists() else {}
    for lang in params["languages"]:
        if lang in scores:
            continue
        check_runner()
        examples = evaluation_set(task.load(lang, params["split"]), params.get("max_examples"),
                                  params.get("sample_seed", 0))
        scores[lang] = task.evaluate(model, examples, tokenizer, max_length, params["batch_size"], id_map)
        write_json(partial, scores)
        unread = scores[lang].get("words_not_encoded")  # execute.RunLog carries it to the terminal line
        print(f"{lang}: {task.metric} {scores[lang]['score']:.1f} (n={len(examples)}"
              + (f", {unread} words not encoded" if unread else "") + ")", flush=True)
    metrics = {"task": task.name, "split": params["split"], "metric": task.metric, "scores": scores}
    metrics = write_metrics(run_dir, metrics)  # refuses a NaN score: the run fails, named
    partial.unlink(missing_ok=True)
    return metrics
