"""Locality of multi-fact erasures: metrics vs the number of facts in ONE request (issue #16).

For every fact count N and method spec (``method[:k=v,...]``, parameters as strings, as in
``ErasureRequest``) run one erasure of N private facts (distinct subjects, relations round-robin)
of a demo world with permissive thresholds and print Reliability, Generalization, Locality (and
by kind), ΔPPL and the sampled leak after. ``--diagnose`` also splits the Locality rows the edit
broke by kind and by whether the row's relation is one the request erases; ``--trace`` measures
Locality after every fact of the sequential loop (the request's own Locality set).

Usage (a demo world built in HOME)::

    nice -n 10 env OMP_NUM_THREADS=1 python scripts/multiloc.py --home /tmp/multiloc-home \\
        --facts 1,4,12,24 featureedit featureedit:refine=none neurons --diagnose --json out.jsonl

Prints no secret: facts are named by relation only.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from editing import evaluate as ev
from editing.baseline import baseline_scores
from editing.checkpoints.publish import down_proj_sha256
from editing.erase import run_erasure
from editing.evaldata import control_prompts, eval_data_for
from editing.methods import FactCase, FactOutcome, RequestFinish, get_method
from editing.models import LoadedModel, load_model
from editing.relations import RELATIONS
from editing.request import ErasureRequest, with_model_params
from editing.world.build import load_world

PERMISSIVE = {
    "min_reliability": 0.0,
    "min_generalization": 0.0,
    "min_locality": 0.0,
    "max_delta_ppl": 1e9,
}


def pick_facts(world: Any, n: int, offset: int = 0) -> list[dict[str, str]]:
    """``n`` private facts with distinct subjects, relations taken round-robin (deterministic)."""
    by_rel: dict[str, list[Any]] = {}
    for f in world.private_facts():
        by_rel.setdefault(f.relation, []).append(f)
    rels = sorted(by_rel)
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    idx = {r: offset for r in rels}
    while len(out) < n:
        progressed = False
        for r in rels:
            while idx[r] < len(by_rel[r]) and by_rel[r][idx[r]].subject in seen:
                idx[r] += 1
            if idx[r] < len(by_rel[r]) and len(out) < n:
                f = by_rel[r][idx[r]]
                seen.add(f.subject)
                out.append({"subject": f.subject, "relation": f.relation, "target": f.target})
                idx[r] += 1
                progressed = True
        if not progressed:
            break
    return out


def prompt_relations(world: Any) -> dict[str, tuple[str, str]]:
    """Every edit prompt of the world's facts -> (subject, relation)."""
    out = {}
    for f in world.facts:
        for p in RELATIONS[f.relation].edit_prompts(f.subject):
            out[p] = (f.subject, f.relation)
    return out


def control_overlap(
    facts: list[dict[str, str]], data: Any, rows: list[tuple[str, str]], where: dict
) -> dict[str, int]:
    """How much of the Locality set (its known ``rows``) the refinement's control prompts touch:
    rows whose prompt IS one of the request's control prompts (the locality term is fitted on
    exactly that prompt: test-set leakage) and rows about a control subject (any relation)."""
    prompts: set[str] = set()
    for f in facts:
        edit = RELATIONS[f["relation"]].edit_prompts(f["subject"])
        prompts.update(control_prompts(edit, f["subject"], data.controls_for(f["relation"])))
    controls = set(data.control_subjects)
    return {
        "rows": len(rows),
        "rows_prompt_in_controls": sum(p in prompts for p, _ in rows),
        "rows_about_a_control": sum(where.get(p, ("?", "?"))[0] in controls for p, _ in rows),
    }


class Tracer:
    """Wraps a method: after every fact, Locality on the request's own set (known rows)."""

    def __init__(self, inner: Any, loaded: LoadedModel, rows: list[tuple[str, str]]) -> None:
        self.inner, self.loaded, self.rows, self.curve = inner, loaded, rows, []

    def erase_fact(self, loaded: LoadedModel, case: FactCase) -> FactOutcome:
        out = self.inner.erase_fact(loaded, case)
        kept = ev.known(loaded.model, loaded.tokenizer, *zip(*self.rows, strict=True))
        self.curve.append(round(sum(kept) / max(1, len(kept)), 3))
        return out

    def finish_request(self, loaded: LoadedModel) -> RequestFinish:
        """The inner method's request-wide step (if any), then Locality once more."""
        hook = getattr(self.inner, "finish_request", None)
        done = hook(loaded) if hook is not None else RequestFinish()
        if done.evidence:
            kept = ev.known(loaded.model, loaded.tokenizer, *zip(*self.rows, strict=True))
            self.curve.append(round(sum(kept) / max(1, len(kept)), 3))
        return done


def run(args: argparse.Namespace) -> None:
    home = Path(args.home)
    world = load_world(args.world, home, progress=False)
    loaded = load_model(args.model, home=home)
    where = prompt_relations(world)
    for n in [int(x) for x in args.facts.split(",")]:
        facts = pick_facts(world, n, args.offset)
        subjects = {f["subject"] for f in facts}
        rels = {f["relation"] for f in facts}
        data = eval_data_for(loaded, subjects)
        assert not any(where.get(p, ("", ""))[0] in subjects for p, _, _ in data.locality)
        base = baseline_scores(loaded, data, down_proj_sha256(loaded.adapter))
        known_idx = [i for i, s in enumerate(base.locality) if s.reproduced]
        known_rows = [data.locality[i][:2] for i in known_idx]
        overlap = control_overlap(facts, data, known_rows, where)
        if args.singles:
            singles(args, loaded, facts, data)
            continue
        for spec in args.specs:
            method, _, ps = spec.partition(":")
            params = dict(kv.split("=", 1) for kv in ps.split(",") if kv)
            req = ErasureRequest(
                model=args.model, facts=facts, thresholds=PERMISSIVE, method=method, params=params
            )
            editor = None
            if args.trace:
                full = with_model_params(req, loaded.entry.method_defaults(method))
                editor = Tracer(get_method(method, full.params), loaded, known_rows)
            t0 = time.perf_counter()
            res = run_erasure(req, loaded, eval_data=data, editor=editor)
            secs = time.perf_counter() - t0
            m = res.metrics.to_json()
            row: dict[str, Any] = {
                "facts": n,
                "offset": args.offset,
                "spec": spec,
                "R": m["reliability"]["value"],
                "G": m["generalization"]["value"],
                "L": m["locality"]["value"],
                "L_private": m["locality"]["by_kind"]["private"]["value"],
                "L_public": m["locality"]["by_kind"]["public"]["value"],
                "dppl": m["delta_ppl"],
                "leak_after": None
                if m.get("leak_rate_after") is None
                else round(m["leak_rate_after"], 4),
                "L_rows": m["locality"]["count"],
                "seconds": round(secs, 1),
                "control_overlap": overlap,
            }
            conv = [
                f.evidence["refine_converged"]
                for f in res.facts
                if "refine_converged" in f.evidence
            ]
            if conv:  # the refinement's hinges all reached zero (within refine_steps)
                row["refine_converged"] = round(sum(conv) / len(conv), 3)
                # per refinement run (a joint one is counted once)
                runs = (
                    {
                        (f.evidence.get("refine_steps"), f.evidence.get("refine_columns"))
                        for f in res.facts
                        if "refine_steps" in f.evidence
                    }
                    if any(f.evidence.get("refine_scope") for f in res.facts)
                    else [
                        (f.evidence["refine_steps"], f.evidence["refine_columns"])
                        for f in res.facts
                        if "refine_steps" in f.evidence
                    ]
                )
                # facts an edit prompt of which still has P(secret) above leak_bound
                row["facts_still_leaking"] = sum(
                    bool(f.evidence.get("edit_prompts_still_leaking")) for f in res.facts
                )
                row["refine_steps"] = sum(r[0] for r in runs)
                row["refine_columns_max"] = max(r[1] for r in runs)
            if editor is not None:
                row["trace"] = editor.curve
            if args.diagnose and res.edit is not None:
                with res.edit.applied(loaded.adapter):
                    kept = ev.known(loaded.model, loaded.tokenizer, *zip(*known_rows, strict=True))
                broken: Counter[str] = Counter()
                total: Counter[str] = Counter()
                controls = set(data.control_subjects)
                subject = [where.get(data.locality[i][0], ("?", "?"))[0] for i in known_idx]
                held = [ok for s, ok in zip(subject, kept, strict=True) if s not in controls]
                # Locality on the rows whose subject is none of the request's control subjects
                # (the edit is fitted to keep the controls' answers)
                row["L_not_controls"] = round(sum(held) / max(1, len(held)), 4)
                row["L_rows_not_controls"] = len(held)
                for i, ok in zip(known_idx, kept, strict=True):
                    prompt, _, kind = data.locality[i]
                    rel = where.get(prompt, ("?", "?"))[1]
                    key = f"{kind}/{'same-rel' if rel in rels else 'other-rel'}"
                    total[key] += 1
                    total[f"rel:{rel}"] += 1
                    if not ok:
                        broken[key] += 1
                        broken[f"rel:{rel}"] += 1
                row["broken"] = {k: f"{broken[k]}/{total[k]}" for k in sorted(total)}
            if args.attacks and res.edit is not None:
                row["attacks"] = attack_figures(loaded, req, res.edit, args.attacks.split(","))
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as sink:
                    sink.write(json.dumps(row) + "\n")


def attack_figures(
    loaded: LoadedModel, req: ErasureRequest, edit: Any, names: list[str]
) -> dict[str, Any]:
    """After the edit, per attack: the mean and worst fact's values and the success shares
    (:func:`editing.attacks.suite.summarise`), the figures the attack limits read."""
    from editing.attacks import AttackCase
    from editing.attacks.suite import run_attacks, summarise

    per_fact = run_attacks(loaded, edit, [AttackCase.from_fact(f) for f in req.facts], names)
    out: dict[str, Any] = {}
    for name, entry in summarise(per_fact).items():
        after = entry["after"]
        keep = {k: v for k, v in after["success"].items() if k in ("any", "any@1", "any@20")}
        picked = ("success_rate_any@1", "success_rate_any@20")
        worst = {
            k: v for k, v in after["worst"].items() if k.startswith("leak_rate") or k in picked
        }
        hits = sum(v or 0 for k, v in after["values"].items() if k.startswith("hits_"))
        out[name] = {"success": keep, "worst": worst}
        if name == "sampled":
            out[name]["mean_hits_per_fact"] = round(hits, 3)
    return out


def singles(args: argparse.Namespace, loaded: LoadedModel, facts: list, data: Any) -> None:
    """Every fact of the request erased alone, Locality on the whole request's set."""
    for spec in args.specs:
        method, _, ps = spec.partition(":")
        params = dict(kv.split("=", 1) for kv in ps.split(",") if kv)
        locs = []
        for f in facts:
            req = ErasureRequest(
                model=args.model, facts=[f], thresholds=PERMISSIVE, method=method, params=params
            )
            m = run_erasure(req, loaded, eval_data=data).metrics.to_json()
            locs.append((f["relation"], m["locality"]["value"], m["reliability"]["value"]))
        drop = sum(1 - x[1] for x in locs)
        row = {"facts": len(facts), "spec": spec, "singles": locs, "sum_of_drops": round(drop, 3)}
        print(json.dumps(row), flush=True)


COLUMNS = (
    "R",
    "G",
    "L",
    "L_private",
    "L_public",
    "L_not_controls",
    "dppl",
    "leak_after",
    "seconds",
)


def table(path: str) -> None:
    """Markdown table of a JSONL file of rows: per (facts, spec) the mean over fact sets
    (offsets) of every figure, the sampled attack's worst fact and the lens attack's @1/@20
    success share (their largest over the sets)."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        groups.setdefault((row["facts"], row["spec"]), []).append(row)
    head = ["facts", "spec", "sets", *COLUMNS, "sampled worst", "lens @1", "lens @20"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (n, spec), rows in sorted(groups.items(), key=lambda kv: kv[0][0]):
        cells = [str(n), spec, str(len(rows))]
        for col in COLUMNS:
            vals = [r[col] for r in rows if r.get(col) is not None]
            cells.append(f"{sum(vals) / len(vals):.3g}" if vals else "")
        att = [r.get("attacks", {}) for r in rows]
        worst = [max(a["sampled"]["worst"].values()) for a in att if "sampled" in a]
        lens1 = [a["logit_lens"]["success"]["any@1"] for a in att if "logit_lens" in a]
        lens20 = [a["logit_lens"]["success"]["any@20"] for a in att if "logit_lens" in a]
        for vals in (worst, lens1, lens20):
            cells.append(f"{max(vals):.3g}" if vals else "")
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("specs", nargs="*", help="method[:k=v,...]")
    ap.add_argument("--home")
    ap.add_argument("--table", help="print the markdown table of this JSONL file and exit")
    ap.add_argument("--world", default="small")
    ap.add_argument("--model", default="demo-small")
    ap.add_argument("--facts", default="1,4,12,24")
    ap.add_argument("--offset", type=int, default=0, help="skip this many facts per relation")
    ap.add_argument("--diagnose", action="store_true")
    ap.add_argument("--trace", action="store_true")
    ap.add_argument(
        "--singles", action="store_true", help="erase each fact alone (on the request's set)"
    )
    ap.add_argument("--attacks", help="also run these attacks, e.g. sampled,logit_lens")
    ap.add_argument("--json", help="append rows to this JSONL file")
    args = ap.parse_args()
    if args.table:
        table(args.table)
    elif args.home and args.specs:
        run(args)
    else:
        ap.error("give --home and method specs, or --table")


if __name__ == "__main__":
    main()
