"""save_pretrained / from_pretrained / push_to_hub: the safe folder plus a model card, loaded from a folder or from
the hub cache, and an upload that fails cleanly without network. No test reaches the real hub."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spacrd_sc.model import SpaCRD

#: The her2st data's licence situation, as its README in the shared data folder states it.
HER2ST_CARD = {
    "training_data": "her2st sections A1, B1, C1, D1, E1, F1, G2, H1 (Andersson et al. 2021)",
    "license": "other",
    "license_name": "her2st-no-license-file",
    "license_link": "https://github.com/almaan/her2st",
    "license_note": "The her2st repository has no LICENSE file: public research data, cite the paper; confirm the "
    "licence before redistributing.",
    "image_backbone": "synthetic test features",
    "metrics": {"auroc (train)": 0.97},
    "tags": ["breast-cancer"],
}


def _scores(model, sec):
    return model.predict_proba(sec["x_gene"], None if model.image_less else sec["x_image"], sec["neighbors"])


@pytest.fixture
def pretrained(fitted_image, tmp_path):
    return fitted_image.save_pretrained(tmp_path / "model", card=HER2ST_CARD)


def test_folder_round_trip_identical_scores(fitted_image, pretrained, target):
    assert sorted(p.name for p in pretrained.iterdir()) == [
        "README.md",
        "config.json",
        "manifest.json",
        "model.safetensors",
    ]
    manifest = json.loads((pretrained / "manifest.json").read_text())
    assert set(manifest["files"]) == {"config.json", "model.safetensors"}  # the card is not verified
    for arg in (pretrained, str(pretrained)):
        loaded = SpaCRD.from_pretrained(arg, device="cpu")
        np.testing.assert_array_equal(_scores(fitted_image, target), _scores(loaded, target))
        assert loaded.genes == fitted_image.genes and loaded.history == fitted_image.history
    assert SpaCRD.load(pretrained).is_fitted  # the same folder format as save()


def test_card_contents(fitted_image, pretrained):
    from huggingface_hub import ModelCard

    card = ModelCard.load(pretrained / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "spacrd_sc"
    assert data["license"] == "other" and data["license_name"] == "her2st-no-license-file"
    assert {"spacrd_sc", "spatial-transcriptomics", "mode-both", "breast-cancer"} <= set(data["tags"])
    text = card.text
    for heading in ("## Model", "## Genes", "## Training", "## Metrics", "## Licence of the training data"):
        assert heading in text
    assert "## How to load" in text and "SpaCRD.from_pretrained" in text
    assert f"{fitted_image.n_genes} genes" in text and ", ".join(fitted_image.genes[:20]) in text
    assert "24 features per spot from the image backbone synthetic test features" in text
    assert "| auroc (train) | 0.97 |" in text and "has no LICENSE file" in text
    assert "her2st sections A1" in text and '"fusion_lr": 0.002' in text and "**fusion**: epochs 12" in text


def test_card_of_image_less_model_without_details(fitted_expression, tmp_path):
    folder = fitted_expression.save_pretrained(tmp_path / "m")
    text = (folder / "README.md").read_text()
    assert "license: unknown" in text and "image-less model" in text and "None recorded" in text
    assert "Training data: not recorded" in text


def test_edited_card_still_loads_but_not_edited_config(pretrained):
    with open(pretrained / "README.md", "a") as fh:
        fh.write("\nEdited on the hub.\n")
    assert SpaCRD.from_pretrained(pretrained).is_fitted
    (pretrained / "config.json").write_text((pretrained / "config.json").read_text() + " ")
    with pytest.raises(ValueError, match="config.json .* does not match manifest.json"):
        SpaCRD.from_pretrained(pretrained)


def test_overwrite_and_refusals(fitted_image, pretrained):
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        fitted_image.save_pretrained(pretrained)
    fitted_image.save_pretrained(pretrained, overwrite=True, card={"license": "cc-by-4.0"})
    assert "license: cc-by-4.0" in (pretrained / "README.md").read_text()
    fitted_image.save(pretrained, overwrite=True)  # save() replaces a folder with a card: no card after
    assert not (pretrained / "README.md").exists()
    with pytest.raises(ValueError, match="unknown entries \\['licence'\\]"):
        fitted_image.save_pretrained(pretrained.parent / "x", card={"licence": "mit"})
    with pytest.raises(ValueError, match="license_name"):
        fitted_image.save_pretrained(pretrained.parent / "x", card={"license": "other"})
    assert not (pretrained.parent / "x").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SpaCRD.from_pretrained(str(pretrained.parent / "missing"))
    with pytest.raises(ValueError, match="neither an existing folder nor a valid hub id"):
        SpaCRD.from_pretrained("not a/valid id!")
    with pytest.raises(ValueError, match="revision"):
        SpaCRD.from_pretrained(pretrained, revision="main")


def test_overwrite_spares_a_readme_that_is_not_a_model_card(fitted_image, tmp_path):
    for other in ({"README.md": "# my project"}, {"README.md": "---\n---\n", "config.json": '{"model_type": "bert"}'}):
        folder = tmp_path / str(len(other))
        folder.mkdir()
        for name, text in other.items():
            (folder / name).write_text(text)
        with pytest.raises(FileExistsError, match="not part of a saved SpaCRD model|another tool wrote"):
            fitted_image.save_pretrained(folder, overwrite=True)
        assert sorted(p.name for p in folder.iterdir()) == sorted(other)


def test_hub_id_offline_from_cache_or_clear_error(pretrained, tmp_path):
    """With HF_HUB_OFFLINE=1 (read when huggingface_hub is imported, so in a fresh process): a hub id in the cache
    loads through snapshot_download; one that is not cached names the id and the fix."""
    cache = tmp_path / "hub"
    commit = "0" * 40
    repo = cache / "models--someone--spacrd-her2st"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in pretrained.iterdir():  # the hub cache's layout: files in blobs/, linked from the snapshot
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = textwrap.dedent(
        f"""
        from spacrd_sc.model import SpaCRD
        m = SpaCRD.from_pretrained("someone/spacrd-her2st", cache_dir={str(cache)!r}, device="cpu")
        print("LOADED", m.is_fitted, m.n_genes)
        try:
            SpaCRD.from_pretrained("someone/not-cached", cache_dir={str(cache)!r})
        except FileNotFoundError as err:
            print("ERROR", err)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "LOADED True 60" in out.stdout
    error = out.stdout.split("ERROR", 1)[1]
    assert "'someone/not-cached'" in error and "HF_HUB_OFFLINE is set" in error
    assert "unset HF_HUB_OFFLINE" in error and str(cache) in error


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_push_to_hub_unreachable_endpoint_fails_cleanly(fitted_image, tmp_path, monkeypatch):
    """The real HfApi against a local port nobody listens on: one wrapped error at create_repo, before any upload,
    and no temporary folder left behind."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(ConnectionError, match="'someone/spacrd-her2st' at http://127.0.0.1:.* failed at create_repo"):
        fitted_image.push_to_hub("someone/spacrd-her2st", token="hf_test", endpoint=endpoint)
    assert list(Path(tmp_path).iterdir()) == []
    with pytest.raises(ValueError, match="owner/name"):
        fitted_image.push_to_hub("no-owner", endpoint=endpoint)


class _HubStandIn:
    """A tiny in-process HTTP server answering the hub endpoints ``HfApi.create_repo`` and ``HfApi.upload_folder``
    call (repository creation, the README's front-matter check, pre-upload — every file "regular", i.e. sent
    inline — and the commit), keeping the files of each commit; any other request gets a 404, so a change of
    the client's protocol fails this test instead of passing unseen. huggingface_hub's own client does the talking."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.commits: list[dict] = []
        self.paths: list[str] = []
        self.validated: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, obj, code=200):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.paths.append(self.path)
                url = f"http://127.0.0.1:{self.server.server_port}"
                if self.path == "/api/repos/create":
                    request = json.loads(body)
                    return self._json({"url": f"{url}/{request['organization']}/{request['name']}"})
                if self.path == "/api/validate-yaml":  # the hub checks a README's front matter before a commit
                    stand_in.validated.append(json.loads(body)["content"])
                    return self._json({"errors": [], "warnings": []})
                if "/preupload/" in self.path:
                    files = json.loads(body)["files"]
                    modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                    return self._json({"files": modes})
                if "/commit/" in self.path:
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    stand_in.commits.append(lines)
                    repo = self.path.split("/api/models/")[1].split("/commit/")[0]
                    return self._json({"commitUrl": f"{url}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40})
                return self._json({"error": "not served"}, 404)

            def do_GET(self):  # noqa: N802
                stand_in.paths.append(self.path)
                self._json({"error": "not served"}, 404)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_push_to_hub_uploads_the_saved_folder(fitted_image, target, tmp_path):
    """What push_to_hub sends through huggingface_hub's client is the save_pretrained folder: the same four files,
    which load into a model with identical scores."""
    import base64

    hub = _HubStandIn()
    try:
        url = fitted_image.push_to_hub(
            "someone/spacrd-her2st", token="hf_test", endpoint=hub.endpoint, card=HER2ST_CARD, commit_message="v1"
        )
    finally:
        hub.close()
    assert url == f"{hub.endpoint}/someone/spacrd-her2st/commit/{'a' * 40}"
    assert hub.paths[0] == "/api/repos/create"
    (commit,) = hub.commits
    assert commit[0] == {"key": "header", "value": {"summary": "v1", "description": ""}}
    files = {e["value"]["path"]: base64.b64decode(e["value"]["content"]) for e in commit if e["key"] == "file"}
    assert sorted(files) == ["README.md", "config.json", "manifest.json", "model.safetensors"]
    received = tmp_path / "received"
    received.mkdir()
    for name, data in files.items():
        (received / name).write_bytes(data)
    assert "license_name: her2st-no-license-file" in (received / "README.md").read_text()
    assert hub.validated == [(received / "README.md").read_text()]
    loaded = SpaCRD.from_pretrained(received, device="cpu")
    np.testing.assert_array_equal(_scores(fitted_image, target), _scores(loaded, target))
