"""What someone who downloads an erasure's artifacts can recover: nothing that leads back.

One module-scoped run, end to end: two erasures of one erasable fact of the small world, submitted
over real HTTP by two tenants (acme publishes ``full``, other publishes ``delta``), run by a real
rq worker on real Redis; then every file of both checkpoints, the records, the SSE events, the
reports (JSON, HTML) and the callback body are downloaded as their owners would. The tests play
the attacker of issue #11 on them — write any downloaded tensor back over the edited weights —
and the operator, who alone can roll an erasure back with the private revert data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file

from editing.adapters import ModelAdapter
from editing.edits import tensor_sha256
from service.config import Settings
from service.store import FilesystemStore
from tests.workers.conftest import MODEL, Fact, live_stack
from workers.callbacks import callback_body

pytestmark = pytest.mark.slow  # two real erasures on the small world


@dataclass
class Download:
    """What one tenant downloaded about its erasure."""

    tenant: str
    erasure_id: str
    checkpoint_id: str
    directory: Path  # the checkpoint's files, as downloaded
    texts: dict[str, bytes]  # record, events, report (JSON and HTML), callback body


@dataclass
class Run:
    fact: Fact
    settings: Settings
    store: FilesystemStore
    url_files: dict[str, bytes]
    full: Download
    delta: Download


def _download(client: httpx.Client, url: str, erasure_id: str, dest: Path) -> Download:
    record = client.get(f"{url}/v1/erasures/{erasure_id}")
    assert record.status_code == 200, record.text
    checkpoint_id = record.json()["checkpoint_id"]
    assert checkpoint_id, record.json()
    listing = client.get(f"{url}/v1/checkpoints/{checkpoint_id}").json()
    for f in listing["files"]:
        target = dest / f["name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.get(f["url"]).content)
    (dest / "manifest.json").write_bytes(
        client.get(f"{url}/v1/checkpoints/{checkpoint_id}/files/manifest.json").content
    )
    texts = {
        "record": record.content,
        "listing": client.get(f"{url}/v1/checkpoints/{checkpoint_id}").content,
        "events": client.get(f"{url}/v1/erasures/{erasure_id}/events").content,
        "report.json": client.get(f"{url}/v1/erasures/{erasure_id}/report").content,
        "report.html": client.get(
            f"{url}/v1/erasures/{erasure_id}/report", params={"format": "html"}
        ).content,
    }
    return Download("", erasure_id, checkpoint_id, dest, texts)


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory,
    fe_home: Path,
    worker_redis_url: str,
    erasable_fact: Fact,
) -> Iterator[Run]:
    """Run both erasures, then download everything (see the module docstring)."""
    tmp = tmp_path_factory.mktemp("artifacts")
    with live_stack(tmp, fe_home, worker_redis_url, ("acme", "other")) as stack:
        url, keys = stack.url, stack.keys
        ids = {}
        for tenant, mode in (("acme", "full"), ("other", "delta")):
            accepted = httpx.post(
                f"{url}/v1/erasures",
                json={"model": MODEL, "facts": [erasable_fact.spec()], "publish": mode},
                headers={"Authorization": f"Bearer {keys[tenant]}"},
            )
            assert accepted.status_code == 202, accepted.text
            ids[tenant] = accepted.json()["id"]
        stack.run_jobs()
        downloads = {}
        for tenant in ("acme", "other"):
            auth = {"Authorization": f"Bearer {keys[tenant]}"}
            with httpx.Client(headers=auth, timeout=60) as client:
                d = _download(client, url, ids[tenant], tmp / tenant)
            d.tenant = tenant
            d.texts["callback"] = callback_body(stack.store.get_erasure(ids[tenant]))
            downloads[tenant] = d
        # the other tenant cannot reach acme's checkpoint at all
        cross = httpx.get(
            f"{url}/v1/checkpoints/{downloads['acme'].checkpoint_id}",
            headers={"Authorization": f"Bearer {keys['other']}"},
        )
        assert cross.status_code == 404
        yield Run(
            erasable_fact, stack.settings, stack.store, {}, downloads["acme"], downloads["other"]
        )


def _edited_regions(patch_dir: Path, base: dict[int, torch.Tensor]) -> list[torch.Tensor]:
    """The base model's values at every region the patch rewrites (what an attacker wants),
    read along the axis the patch records."""
    from editing.checkpoints import load_patch
    from editing.checkpoints.fit import region

    return [region(base[p.layer], p.axis, p.indices) for p in load_patch(patch_dir).layers]


@pytest.fixture(scope="module")
def base_weights(small_model: Any) -> dict[int, torch.Tensor]:
    adapter: ModelAdapter = small_model.adapter
    return {
        layer: adapter.down_proj_weight(layer).detach().clone() for layer in range(adapter.n_layers)
    }


@pytest.mark.parametrize("mode", ["full", "delta"])
def test_no_downloaded_tensor_holds_a_pre_edit_value(
    run: Run, mode: str, base_weights: dict[int, torch.Tensor]
) -> None:
    d = run.full if mode == "full" else run.delta
    regions = _edited_regions(d.directory / "delta", base_weights)
    assert regions, "the erasure edited nothing"
    wanted = {tensor_sha256(r) for r in regions}
    for path in d.directory.rglob("*.safetensors"):
        for name, tensor in load_file(str(path)).items():
            assert not name.endswith(".old"), f"{path.name} carries pre-edit values ({name})"
            candidates = [tensor, tensor.T] if tensor.dim() == 2 else [tensor]
            for t in candidates:
                assert tensor_sha256(t.contiguous()) not in wanted, f"{path.name}:{name}"
                for r in regions:
                    if t.shape == r.shape:
                        assert not torch.equal(t, r), f"{path.name}:{name} equals base values"
    names = {p.relative_to(d.directory).as_posix() for p in d.directory.rglob("*") if p.is_file()}
    assert ("model.safetensors" in names) == (mode == "full")


def test_the_downloaded_full_model_does_not_produce_the_secret(run: Run, small_model: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editing.evaluate import leaks
    from editing.request import FactSpec

    model = AutoModelForCausalLM.from_pretrained(run.full.directory, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(run.full.directory)
    spec = FactSpec(**run.fact.spec())
    prompts = spec.resolved_edit_prompts()
    assert any(leaks(small_model.model, small_model.tokenizer, prompts, run.fact.target))
    assert not any(leaks(model, tok, prompts, run.fact.target))


@pytest.mark.parametrize("mode", ["full", "delta"])
def test_no_downloaded_file_names_the_subject_or_another_tenant(run: Run, mode: str) -> None:
    d, other = (run.full, run.delta) if mode == "full" else (run.delta, run.full)
    blobs = {p.name: p.read_bytes() for p in d.directory.rglob("*") if p.is_file()}
    blobs.update(d.texts)
    subject = run.fact.subject.encode()
    for name, blob in blobs.items():
        assert subject not in blob, f"{name} names the data subject"
        assert run.fact.target.encode() not in blob, f"{name} holds the secret"
        assert other.erasure_id.encode() not in blob, f"{name} names another tenant's erasure"
        assert other.checkpoint_id.encode() not in blob, f"{name} names another's checkpoint"
    report = d.texts["report.json"].decode()
    assert '"old"' not in report and '"old_sha256"' not in report


def test_the_operator_can_roll_back_with_the_private_revert_data(
    run: Run,
    tmp_path: Path,
    base_weights: dict[int, torch.Tensor],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from editing.cli import main

    home = ["--home", str(run.settings.home)]
    store_env = {"FEATUREEDIT_STORE_ROOT": str(run.settings.store_dir)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in store_env.items():
            mp.setenv(k, v)
        # the downloaded files alone cannot undo the erasure
        ckpt = str(run.full.directory)
        assert main(["apply-delta", ckpt, ckpt, str(tmp_path / "x"), "--revert", *home]) != 0
        assert "no revert data given" in capsys.readouterr().err
        out = tmp_path / "revert.bin"
        assert main(["private", "export", run.full.erasure_id, "--out", str(out), *home]) == 0
        assert out.read_bytes().startswith(b"gAAAAA")  # sealed by default
        back = tmp_path / "rolled-back"
        args = [str(run.full.directory), str(run.full.directory), str(back), "--revert"]
        assert main(["apply-delta", *args, "--revert-data", str(out), "-q", *home]) == 0
        subjects = run.store.get_private(run.full.erasure_id, "subjects")
        assert subjects is not None and run.fact.subject.encode() not in subjects  # sealed
    rolled = ModelAdapter(_load(back))
    for layer, w in base_weights.items():
        assert torch.equal(rolled.down_proj_weight(layer), w)


def _load(directory: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
