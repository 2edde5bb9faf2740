"""A complete erasure report built with the typed model (:mod:`editing.report`), for the report
tests that need no real erasure (``tests/workers/test_report_observability.py`` renders the report
of a real one). Every section is filled; the relation text can be hostile markup."""

from __future__ import annotations

from typing import Any

from editing import report as rm

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
SHA = "ab" * 32
CHECKPOINT_ID = "0123456789abcdef"


def _fact(relation: str) -> rm.FactReport:
    return rm.FactReport(
        index=0,
        subject_fingerprint="hmac-sha256:" + SHA,
        relation=relation,
        fingerprint="hmac-sha256:" + SHA,
        prompts=rm.FactPrompts(edit=8, edit_known=8, heldout=4, heldout_known=4),
        status="erased",
        metrics=rm.FactMetrics(
            before=rm.FactSnapshot(prob=0.8, exposure=9.5, leak_rate=rm.ReportedRate(value=0.9)),
            after=rm.FactSnapshot(prob=0.01, exposure=0.4, leak_rate=rm.ReportedRate(value=0.0)),
            reliability=rm.ReportedRate(value=1.0, hits=8, count=8),
            delta_prob=0.98,
        ),
        units=[
            rm.UnitReport(
                kind="feature",
                site="resid_post",
                layer=1,
                index=42,
                score=0.5,
                activation=3.2,
                control_activation=0.1,
                prompt_count=8,
            )
        ],
    )


def sample_report(erasure_id: str, relation: str = HOSTILE) -> rm.ErasureReport:
    """A succeeded FeatureEdit erasure with a published checkpoint."""
    return rm.ErasureReport(
        status="succeeded",
        model_id="demo-small",
        method="featureedit",
        params={"site": "resid_post", "top_k": 4, "note": HOSTILE},
        thresholds={
            "min_reliability": 0.9,
            "min_generalization": 0.7,
            "min_locality": 0.9,
            "max_delta_ppl": 0.05,
            "max_sampled_leak": 0.1,
        },
        metrics=rm.Metrics(
            reliability=rm.ReportedRate(value=1.0, count=8, facts=1),
            generalization=rm.ReportedRate(value=0.75, count=4, facts=1),
            locality=rm.LocalityRate(
                value=0.98,
                hits=49,
                count=50,
                by_kind={"private": rm.ReportedRate(value=1.0, hits=10, count=10)},
                set_size=60,
            ),
            delta_ppl=0.004,
            ppl_before=7.25,
            ppl_after=7.28,
            exposure_before=9.5,
            exposure_after=0.4,
            leak_rate_before=0.9,
            leak_rate_after=0.0,
            entries_changed=512,
        ),
        acceptance=rm.Acceptance(accepted=True, reasons=[]),
        attacks={
            "sampled": rm.AttackSummary(
                budget={"samples": 20, "top_p": 0.9, "seed": 0},
                facts=1,
                before=rm.AttackState(values={"leak_rate_t1": 0.95}, success={"any": 1.0}),
                after=rm.AttackState(
                    values={"leak_rate_t1": 0.05},
                    worst={"leak_rate_t1": 0.05},
                    success={"any": 1.0},
                ),
            ),
            "exposure": rm.AttackSummary(
                budget={"n_random": 2000, "margin_bits": 1.0},
                facts=1,
                before=rm.AttackState(values={"exposure": 24.5, "control_exposure": 2.25}),
                after=rm.AttackState(values={"exposure": 3.5, "control_exposure": 2.25}),
                control={"control_exposure": 2.25},
            ),
        },
        timings={"baseline": 1.0, "locate": 2.0, "edit": 0.1, "evaluate": 3.0},
        facts=[_fact(relation)],
        edit=rm.EditFootprint(
            entries_changed=512,
            delta_bytes=4160,
            layers=[
                rm.LayerFootprint(
                    layer=1,
                    param="model.layers.1.mlp.down_proj.weight",
                    axis="cols",
                    indices=[3, 7, 11, 19],
                    entries_changed=512,
                    base_sha256=SHA,
                    new_sha256="cd" * 32,
                )
            ],
        ),
        base_weights_sha256=SHA,
        erasure_id=erasure_id,
        code_version=rm.CodeVersion(package="featureedit", version="0.1.0", git_commit="abc123"),
        checkpoint=rm.CheckpointSummary(
            checkpoint_id=CHECKPOINT_ID,
            created_at="2026-01-01T00:00:00+00:00",
            base_model=rm.BaseModelRef(
                model_id="demo-small", model_type="gemma2", down_proj_sha256=SHA
            ),
            edited_down_proj_sha256="ef" * 32,
            files=[rm.CheckpointFile(name="model.safetensors", size=1234, sha256="12" * 32)],
            total_bytes=1234,
            delta_bytes_on_disk=0,
        ),
        model="demo-small",
        checkpoint_id=CHECKPOINT_ID,
        parent_checkpoint_id=None,
        created_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T00:01:00Z",
    )


def sample_report_json(erasure_id: str, relation: str = HOSTILE) -> dict[str, Any]:
    """:func:`sample_report` as the worker stores it."""
    return sample_report(erasure_id, relation).to_json()
