"""Engine commands of the ``featureedit`` CLI: ``erase``, ``demo`` and ``apply-delta``
(``bench`` is :mod:`editing.cli_bench`).

Registered by :func:`editing.cli.register_commands`; heavy imports stay inside the commands.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from editing.cli_input import (
    add_attack_options,
    add_fact_options,
    add_json_option,
    add_method_options,
    fact_from_options,
    parse_pairs,
    read_fact_file,
)
from editing.errors import ConfigError

# `demo` samples the downloaded checkpoint as an attacker would: this many continuations per
# prompt at temperature 1, from a fresh random seed (not the evaluation's sampling streams)
DEMO_SAMPLES = 50

if TYPE_CHECKING:
    from editing.attack_gate import AttackPlan
    from editing.report import ErasureReport


def _load_facts(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The facts of ``--file`` and of the fact flags (ConfigError if there are none)."""
    facts = read_fact_file(Path(args.file), f"--file {args.file}")[1] if args.file else []
    fact = fact_from_options(args)
    if fact is not None:
        facts.append(fact)
    if not facts:
        raise ConfigError("no fact given: use --subject/--relation/--target or --file FACTS.json")
    return facts


def _fmt(v: Any) -> str:
    """A metric in a table cell: a count as is, a number or a rate's value to 3 decimals."""
    from editing.acceptance import number

    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    value = number(v)
    return "-" if value is None else f"{value:.3f}"


def _metrics_rows(
    results: Mapping[str, ErasureReport], paper: bool
) -> tuple[list[str], list[list]]:
    """Per metric a row: each method's value (and the paper's, with ``paper``), then status."""
    from editing.acceptance import metric
    from editing.bench import METRICS
    from editing.erase import PAPER_FIGURES

    names = list(results)
    headers = ["metric", *names]
    if paper:
        headers += [f"paper {n}" for n in names if n in PAPER_FIGURES]
    rows = []
    for name in METRICS:
        row = [name] + [_fmt(metric(results[n].metrics, name)) for n in names]
        if paper:
            row += [_fmt(PAPER_FIGURES[n].get(name)) for n in names if n in PAPER_FIGURES]
        rows.append(row)
    rows.append(
        ["status"]
        + [str(results[n].status) for n in names]
        + ([""] * sum(n in PAPER_FIGURES for n in names) if paper else [])
    )
    return headers, rows


def _progress(args: argparse.Namespace):
    if args.quiet:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc="erase", unit="%", file=sys.stderr, leave=False)

    def update(stage: str, frac: float) -> None:
        bar.set_description(stage)
        bar.n = int(100 * frac)
        bar.refresh()

    return update


def _attack_plan(args: argparse.Namespace) -> AttackPlan | None:
    """The attacks of the publish decision: the service's default plan (the worker's default
    attacks, budgets and limits, :data:`editing.acceptance.DEFAULT_ATTACKS`), or the attacks
    ``--attacks``/``--budget`` name with the default limits; None with ``--no-attacks``."""
    from editing.attack_gate import AttackPlan, default_plan
    from editing.attacks import parse_attacks
    from editing.cli_attack import parse_budgets

    if args.no_attacks:
        if args.attacks is not None or args.budget:
            raise ConfigError("--no-attacks cannot be combined with --attacks or --budget")
        return None
    default = default_plan()
    if args.attacks is None and not args.budget:
        return default
    names = default.names if args.attacks is None else parse_attacks(args.attacks)
    budgets = {name: dict(b) for name, b in default.budgets.items()}
    for name, budget in parse_budgets(args.budget).items():  # given keys replace the defaults
        budgets[name] = {**budgets.get(name, {}), **budget}
    return AttackPlan(names, budgets, default.limits)


def cmd_erase(args: argparse.Namespace) -> int:
    """Erase facts from a model; print metrics; publish the checkpoint if accepted."""
    from editing.cli import format_table, print_json
    from editing.models import load_model
    from editing.pipeline import erase_and_publish, keep_revert_locally, load_base_edit
    from editing.request import ErasureRequest

    request = ErasureRequest(
        model=args.model,
        method=args.method,
        facts=_load_facts(args),
        params=parse_pairs(args.param),
        thresholds=parse_pairs(args.threshold, "--threshold"),
        base_checkpoint=args.base_checkpoint,
        publish=args.publish,
    )
    loaded = load_model(request.model)
    base_edit = None
    if request.base_checkpoint:  # old values come from the base model itself
        base_edit = load_base_edit(loaded, loaded.home / "checkpoints" / request.base_checkpoint)
    kept: list[Path] = []
    erasure = erase_and_publish(
        request,
        loaded,
        checkpoint_root=Path(args.out) if args.out else loaded.home / "checkpoints",
        keep_revert=lambda edit, cid: kept.append(keep_revert_locally(loaded.home)(edit, cid)),
        base_edit=base_edit,
        publish=not args.no_publish,
        progress=_progress(args),
        attacks=_attack_plan(args),
    )
    result, checkpoint = erasure.result, erasure.checkpoint
    revert = kept[0] if kept else None
    report = result.report()
    if args.json:  # the report, with the paths of what was written (no secret in either)
        doc = report.to_json()
        doc["checkpoint"] = None if checkpoint is None else str(checkpoint)
        doc["revert_data"] = None if revert is None else str(revert)
        print_json(doc)
    else:
        headers, rows = _metrics_rows({request.method: report}, paper=False)
        print(format_table(headers, rows))
        if report.attacks:
            from editing.cli_attack import summary_rows

            summary = {name: a.to_json() for name, a in report.attacks.items()}
            print(format_table(["attack", "success", "before", "after"], summary_rows(summary)))
        for reason in result.acceptance.reasons:
            print(f"not accepted: {reason}")
        print(f"checkpoint: {checkpoint or 'not published'}")
        if revert is not None:
            print(f"revert data (private, sealed with the service key; never share it): {revert}")
    return 0 if result.status == "succeeded" else 1


def _demo_fact(args: argparse.Namespace, loaded: Any) -> tuple[dict[str, Any], str]:
    """The fact ``demo`` erases and the sentence that introduces it.

    A demo world's private fact of ``--relation``; on a model fine-tuned on fictional people
    (its entry names a ``facts_file``) its first fact of ``--relation``; on a registered real
    model the first shipped genuine fact it knows (of ``--relation`` if that is one of the fact
    set's relations).
    """
    entry = loaded.entry
    if entry.is_demo:
        from editing.world.build import load_world

        world = load_world(entry.demo_size or "default", progress=not args.quiet)
        fact = next(f for f in world.private_facts() if f.relation == args.relation)
        spec = {"subject": fact.subject, "relation": fact.relation, "target": fact.target}
        title = f"Demo world '{entry.demo_size}': erasing {fact.subject}'s {fact.relation}"
        return spec, f"{title} (a fictional secret)"
    if entry.facts_file:
        from editing.world.tofu_data import registered_facts

        facts = registered_facts(entry.facts_file)
        fact = next((f for f in facts if f.relation == args.relation), facts[0])
        title = f"Model {loaded.model_id!r}: erasing {fact.subject}'s {fact.relation}"
        return fact.spec(), f"{title} (a fictional secret it was fine-tuned on)"
    from editing.realdata.pick import fact_spec, first_known_fact

    real = first_known_fact(loaded.model, loaded.tokenizer, args.relation)
    return fact_spec(real), f"Model {loaded.model_id!r}: erasing the genuine fact {real.key}"


def cmd_demo(args: argparse.Namespace) -> int:
    """Erase one fact two ways on the demo world (or ``--model``), compare, publish, verify."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editing.attack_gate import default_plan
    from editing.cli import format_table, print_json
    from editing.evaluate import leak_rate, leaks
    from editing.models import load_model
    from editing.pipeline import erase_and_publish, keep_revert_locally
    from editing.request import ErasureRequest

    model_id = args.model or ("demo" if args.size == "default" else "demo-small")
    loaded = load_model(model_id)
    spec, title = _demo_fact(args, loaded)
    secret = spec["target"]
    sites = loaded.entry.saes
    params = {"site": "resid_post" if "resid_post" in sites or not sites else sorted(sites)[0]}
    erasures, reports = {}, {}
    for method in ("featureedit", "neurons"):  # only FeatureEdit's checkpoint is published
        req = ErasureRequest(
            model=model_id,
            method=method,
            facts=[spec],
            params=params if method == "featureedit" else {},
        )
        erasures[method] = erase_and_publish(
            req,
            loaded,
            checkpoint_root=loaded.home / "checkpoints",
            keep_revert=keep_revert_locally(loaded.home),
            publish=method == "featureedit",
            progress=_progress(args),
            attacks=default_plan(),  # the service's publish decision
        )
        reports[method] = erasures[method].result.report()
    checkpoint = erasures["featureedit"].checkpoint
    verified: dict[str, Any] = {}
    if checkpoint is not None:
        edited = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(checkpoint)
        prompts = req.facts[0].resolved_edit_prompts() + req.facts[0].resolved_heldout_prompts()
        sampled = leak_rate(edited, tok, prompts, secret, DEMO_SAMPLES, seed=secrets.randbits(62))
        base_sampled = leak_rate(loaded.model, loaded.tokenizer, prompts, secret, DEMO_SAMPLES)
        verified = {
            "checkpoint_prompts_leaking": sum(leaks(edited, tok, prompts, secret)),
            "base_prompts_leaking": sum(leaks(loaded.model, loaded.tokenizer, prompts, secret)),
            "prompts": len(prompts),
            "checkpoint_samples_leaking": sampled.hits,
            "base_samples_leaking": base_sampled.hits,
            "samples": sampled.count,
        }
    out = {
        "model": model_id,
        "fact": {"subject": spec["subject"], "relation": spec["relation"]},
        "results": {method: report.to_json() for method, report in reports.items()},
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "verification": verified,
    }
    if args.json:
        print_json(out)
        return 0
    print(f"{title}\n")
    headers, rows = _metrics_rows(reports, paper=True)
    print(format_table(headers, rows))
    print()
    for name, report in reports.items():
        t = report.timings
        print(
            f"{name}: locate {t['locate']:.2f}s, edit {t['edit']:.2f}s, "
            f"evaluate {t['evaluate']:.2f}s, units {report.metrics.units}"
        )
    if checkpoint:
        print(f"\nFeatureEdit checkpoint: {checkpoint}")
        print(
            f"  loads with transformers; prompts still producing the secret: "
            f"{verified['checkpoint_prompts_leaking']}/{verified['prompts']} "
            f"(base model: {verified['base_prompts_leaking']}/{verified['prompts']})"
        )
        print(
            f"  sampled continuations containing the secret (temperature 1, {DEMO_SAMPLES} per "
            f"prompt): {verified['checkpoint_samples_leaking']}/{verified['samples']} "
            f"(base model: {verified['base_samples_leaking']}/{verified['samples']})"
        )
    else:
        print("\nFeatureEdit result was not accepted; nothing published.")
    return 0


def cmd_apply_delta(args: argparse.Namespace) -> int:
    """Apply (or revert) a checkpoint's delta to a base model directory."""
    from editing.checkpoints import apply_delta_files
    from editing.cli import print_json
    from editing.registry import get_entry

    base = Path(args.base)
    if not base.is_dir():
        entry = get_entry(args.base)
        if entry.is_demo:
            from editing.world.build import load_world

            base = load_world(entry.demo_size or "default", build=False).model_dir
        elif entry.path:
            base = Path(entry.path)
        else:
            raise ConfigError(f"{args.base!r} is neither a directory nor a model with a local path")
    if args.revert_data and not args.revert:
        raise ConfigError("--revert-data is only used with --revert")
    out = apply_delta_files(
        base,
        Path(args.delta),
        Path(args.out),
        revert=args.revert,
        revert_data=Path(args.revert_data) if args.revert_data else None,
    )
    if args.json:
        print_json({"output": str(out), "reverted": args.revert})
    else:
        print(f"{'reverted' if args.revert else 'applied'} delta -> {out}")
    return 0


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the engine commands to the CLI."""
    from editing.methods import method_names
    from editing.request import DEFAULT_METHOD, PUBLISH_MODES

    erase = subparsers.add_parser(
        "erase",
        parents=[common],
        help="erase private facts from a model and publish the result",
        description="Erase one or more facts (flags, or a JSON/JSONL file of facts) from a "
        "registered model or local model directory. Prints the metrics; when the result meets "
        "the acceptance thresholds (and the method edits weights) publishes a checkpoint under "
        "$FEATUREEDIT_HOME/checkpoints/ (or --out). Exit code 1 when not accepted.",
    )
    erase.add_argument("--model", default="demo", help="model id or local directory (default demo)")
    erase.add_argument("--method", default=DEFAULT_METHOD, choices=method_names())
    add_fact_options(erase)
    erase.add_argument("--file", help="JSON ({'facts': [...]} or a list) or JSONL of facts")
    add_method_options(erase)
    add_attack_options(
        erase,
        "the attacks run before the publish decision (default: the service's, sampled and "
        "logit_lens; given alone: all attacks). The service's default limits apply "
        "(max_sampled_leak=0.01, max_logit_lens_success_at_1=0); a --threshold of the same key "
        "replaces one (see docs/attacks.md)",
    )
    erase.add_argument(
        "--no-attacks",
        action="store_true",
        help="decide on the greedy criteria alone: no default attack or limit (a weaker claim "
        "than the service makes; a --threshold attack limit still runs its attack)",
    )
    erase.add_argument("--out", help="checkpoint root directory")
    erase.add_argument("--no-publish", action="store_true", help="evaluate only")
    erase.add_argument(
        "--publish",
        choices=PUBLISH_MODES,
        help="full: the edited model plus its delta (default); delta: the delta alone (rebuild "
        "with apply-delta)",
    )
    add_json_option(erase)
    erase.set_defaults(func=cmd_erase)

    demo = subparsers.add_parser(
        "demo",
        parents=[common],
        help="the end-to-end demo on the embedded demo world",
        description="Build (or load) the demo world, erase one private fact with FeatureEdit and "
        "with the neuron baseline, print both next to the paper's figures, publish the FeatureEdit "
        "checkpoint and check that it loads with transformers and no longer produces the secret.",
    )
    demo.add_argument("--size", default="default", choices=("default", "small"))
    demo.add_argument(
        "--model",
        help="a registered model instead of the demo world: erases the first shipped genuine "
        "fact it knows (of --relation if that is a fact-set relation, e.g. capital_of)",
    )
    demo.add_argument("--relation", default="phone", help="which kind of fact to erase")
    add_json_option(demo)
    demo.set_defaults(func=cmd_demo)

    apply = subparsers.add_parser(
        "apply-delta",
        parents=[common],
        help="apply a checkpoint's patch (or, with the operator's revert data, undo it)",
        description="Write a full model directory: BASE (a model directory or model id) with the "
        "forward patch of DELTA (a checkpoint directory or its delta/ directory) applied. With "
        "--revert, BASE is the edited model and --revert-data FILE (the operator's private "
        "revert data) writes the pre-edit values back: a published checkpoint carries none, so "
        "it cannot undo itself.",
    )
    apply.add_argument("base")
    apply.add_argument("delta")
    apply.add_argument("out")
    apply.add_argument("--revert", action="store_true", help="undo the patch (needs --revert-data)")
    apply.add_argument(
        "--revert-data",
        metavar="FILE",
        help="the operator's revert data: the sealed file `erase` printed (under "
        "$FEATUREEDIT_HOME/private/) or `featureedit private export`'s output",
    )
    add_json_option(apply)
    apply.set_defaults(func=cmd_apply_delta)
