"""The notebook that walks a user's own texts through score, cluster and adapt runs end to end
(nbclient, a real kernel), on the tiny random model with two training steps, so it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "own_texts.ipynb"


def test_the_own_texts_notebook_runs_and_writes_every_step(
    tiny_model_dir, tmp_path, monkeypatch, wordnet_installed
):
    import nbformat
    from nbclient import NotebookClient

    work = tmp_path / "work"
    monkeypatch.setenv("LLM_EMBED_NOTEBOOK_MODEL", tiny_model_dir)
    monkeypatch.setenv("LLM_EMBED_NOTEBOOK_STEPS", "2")
    monkeypatch.setenv("LLM_EMBED_NOTEBOOK_WORK", str(work))
    monkeypatch.setenv("LLM_EMBED_ROOT", str(ROOT))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})  # fmt: skip
    client.execute()
    (score,) = json.loads((work / "scores" / "results.json").read_text())
    assert score["task"] == "verbs" and 0 < score["v_measure"] < 1
    texts = (work / "verbs.jsonl").read_text().splitlines()
    for folder in ("clusters", "clusters-adapted"):
        report = json.loads((work / folder / "clusters.json").read_text())
        assert (report["clusters"], report["labels"], report["texts"]) == (5, 5, len(texts))
        assert (work / folder / "report.html").is_file()
    assert (work / "adapted" / "model" / "encoder.json").is_file()
    outputs = "".join(
        o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", [])
    )
    assert "before," in outputs and "after adapting" in outputs
    iframes = [o for cell in notebook.cells for o in cell.get("outputs", [])
               if "text/html" in o.get("data", {}) and "iframe" in o["data"]["text/html"]]  # fmt: skip
    assert len(iframes) == 1


pytestmark = pytest.mark.slow
