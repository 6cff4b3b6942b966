"""Hub provenance: the commit hash of a hub dataset or model, read from a Hugging Face cache laid out
as huggingface_hub writes it (`<kind>s--org--name/refs/main`, `snapshots/<sha>/`), and "unknown
(offline)" when neither the hub nor the cache can say, without raising."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from xfer import hub, report
from xfer.config import ModelConfig
from xfer.paths import root

SHA = "0123456789abcdef0123456789abcdef01234567"


def _snapshot(cache, kind, repo_id, sha, ref=True):
    folder = cache / f"{kind}s--{repo_id.replace('/', '--')}"
    (folder / "snapshots" / sha).mkdir(parents=True)
    (folder / "snapshots" / sha / "README.md").write_text("a cached file\n")
    (folder / "blobs").mkdir()
    if ref:
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(sha)  # huggingface_hub writes it without a newline


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub").mkdir()
    return tmp_path / "hub"


def test_offline_without_a_cached_copy_is_unknown_not_an_error(offline):
    assert hub.revision("facebook/xnli", "dataset") == hub.UNKNOWN == "unknown (offline)"
    assert hub.revision("FacebookAI/xlm-roberta-large", "model") == hub.UNKNOWN


def test_offline_the_cache_snapshot_gives_the_sha(offline):
    _snapshot(offline, "dataset", "facebook/xnli", SHA)
    other = "f" * 40
    _snapshot(offline, "model", "FacebookAI/xlm-roberta-large", other, ref=False)  # no refs/: its one snapshot
    assert hub.revision("facebook/xnli", "dataset") == SHA
    assert hub.revision("FacebookAI/xlm-roberta-large", "model") == other
    assert hub.revision("facebook/xnli", "model") == hub.UNKNOWN  # a model of that name is not cached


def test_run_records_hub_datasets_and_model_but_not_local_files(offline, monkeypatch):
    """Read from the hub (XFER_DATA_DIR=hub): the task's dataset and the hub model are recorded;
    read from the local data folder: nothing, since its sha256 are in the run ids already."""
    _snapshot(offline, "dataset", "facebook/xnli", SHA)
    monkeypatch.setenv("XFER_DATA_DIR", "hub")
    model = ModelConfig().model_dump()
    assert model["name"] == "FacebookAI/xlm-roberta-large"  # the hub's id, not the legacy alias
    assert hub.revisions(["xnli_derived", "udpos+xnli"], model) == {
        "dataset facebook/xnli": SHA, "dataset google/xtreme": hub.UNKNOWN,
        "model FacebookAI/xlm-roberta-large": hub.UNKNOWN}
    if not (root() / "data" / "raw" / "xtreme").is_dir():
        pytest.skip("data/raw not unpacked (make data)")
    monkeypatch.delenv("XFER_DATA_DIR")
    assert hub.revisions(["udpos"], {"source": "e5", "name": "mE5-small"}) == {}


def test_report_provenance_lists_hub_revisions_and_the_model_is_xlmr():
    text = report.provenance({"provenance": {"hub_revisions": {"dataset facebook/xnli": SHA,
                                                                "model FacebookAI/xlm-roberta-large": hub.UNKNOWN}}})
    assert f"| `dataset facebook/xnli` | `{SHA}` |" in text
    assert "| `model FacebookAI/xlm-roberta-large` | `unknown (offline)` |" in text
    from xfer.grid.collect import describe_model

    assert describe_model(SimpleNamespace(model=ModelConfig()))["stand_in"] is False  # XLM-R, by its hub id


def test_online_path_without_an_answer_falls_back_on_the_cache(offline, monkeypatch):
    """Not marked offline: the hub is asked, and when it cannot answer (no network here; an unknown
    id where there is one), the cache's snapshot is the record, with no exception."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    _snapshot(offline, "dataset", "xfer-tests/no-such-dataset", SHA)
    assert hub.revision("xfer-tests/no-such-dataset", "dataset") == SHA
    assert hub.revision("xfer-tests/no-such-model", "model") == hub.UNKNOWN
