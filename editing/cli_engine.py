"""Engine commands of the ``featureedit`` CLI: ``erase``, ``demo``, ``apply-delta``, ``bench``.

Registered by :func:`editing.cli.register_commands`; heavy imports stay inside the commands.

``bench`` extensions: other packages add modes to ``featureedit bench`` through the entry-point
group ``featureedit.bench``, without ``editing`` importing them. An entry point ``NAME`` names a
callable ``register(bench_parser) -> command`` that adds a ``--NAME`` flag (dest ``NAME``) and its
own options and returns ``command(args) -> int``, run instead of the engine benchmark when
``--NAME`` is given (``ops.cli:register_bench`` adds ``--service``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from editing.errors import ConfigError

BENCH_EXTENSION_GROUP = "featureedit.bench"
PARAM_HELP = (
    "method parameter KEY=VALUE (repeatable), e.g. variant=rows, selector=activation, tau1=0.3, "
    "layers=[1,2]; see the method's params class in editing/methods/params.py"
)


def parse_pairs(pairs: list[str] | None, flag: str = "--param") -> dict[str, Any]:
    """``["k=v", ...]`` as a dict, each value JSON-decoded when it parses (else the string)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _load_facts(args: argparse.Namespace) -> list[dict[str, Any]]:
    facts: list[dict[str, Any]] = []
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise ConfigError(f"--file {path} does not exist")
        text = path.read_text()
        try:
            if path.suffix == ".jsonl":
                facts = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                doc = json.loads(text)
                facts = doc.get("facts", doc) if isinstance(doc, dict) else doc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--file {path} is not valid JSON: line {exc.lineno}") from None
        if isinstance(facts, dict):
            facts = [facts]
    if args.subject or args.relation or args.target or args.target_file:
        target = args.target
        if args.target_file:
            target = Path(args.target_file).read_text().strip()
        if not (args.subject and args.relation and target):
            raise ConfigError("a fact needs --subject, --relation and --target (or --target-file)")
        fact: dict[str, Any] = {
            "subject": args.subject,
            "relation": args.relation,
            "target": target,
        }
        if args.prompt:
            fact["edit_prompts"] = args.prompt
        if args.heldout:
            fact["heldout_prompts"] = args.heldout
        facts.append(fact)
    if not facts:
        raise ConfigError("no fact given: use --subject/--relation/--target or --file FACTS.json")
    return facts


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        v = v.get("value")
        if v is None:
            return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _metrics_rows(results: dict[str, dict[str, Any]], paper: bool) -> tuple[list[str], list[list]]:
    from editing.bench import METRICS
    from editing.erase import PAPER_FIGURES

    names = list(results)
    headers = ["metric", *names]
    if paper:
        headers += [f"paper {n}" for n in names if n in PAPER_FIGURES]
    rows = []
    for metric in (*METRICS, "entries_changed"):
        row = [metric] + [_fmt(results[n]["metrics"].get(metric)) for n in names]
        if paper:
            row += [_fmt(PAPER_FIGURES[n].get(metric)) for n in names if n in PAPER_FIGURES]
        rows.append(row)
    rows.append(
        ["status"]
        + [results[n]["status"] for n in names]
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
    )
    result, checkpoint = erasure.result, erasure.checkpoint
    revert = kept[0] if kept else None
    doc = result.to_dict()
    doc["checkpoint"] = None if checkpoint is None else str(checkpoint)
    doc["revert_data"] = None if revert is None else str(revert)
    if args.json:
        print_json(doc)
    else:
        headers, rows = _metrics_rows({request.method: doc}, paper=False)
        print(format_table(headers, rows))
        for reason in result.acceptance.get("reasons", []):
            print(f"not accepted: {reason}")
        print(f"checkpoint: {checkpoint or 'not published'}")
        if revert is not None:
            print(f"revert data (private, sealed with the service key; never share it): {revert}")
    return 0 if result.status == "succeeded" else 1


def _demo_fact(args: argparse.Namespace, loaded: Any) -> tuple[dict[str, Any], str]:
    """The fact ``demo`` erases and the sentence that introduces it.

    A demo world's private fact of ``--relation``; on a registered real model the first shipped
    genuine fact it knows (of ``--relation`` if that is one of the fact set's relations).
    """
    entry = loaded.entry
    if entry.is_demo:
        from editing.world.build import load_world

        world = load_world(entry.demo_size or "default", progress=not args.quiet)
        fact = next(f for f in world.private_facts() if f.relation == args.relation)
        spec = {"subject": fact.subject, "relation": fact.relation, "target": fact.target}
        title = f"Demo world '{entry.demo_size}': erasing {fact.subject}'s {fact.relation}"
        return spec, f"{title} (a fictional secret)"
    from editing.realdata.pick import fact_spec, first_known_fact

    real = first_known_fact(loaded.model, loaded.tokenizer, args.relation)
    return fact_spec(real), f"Model {loaded.model_id!r}: erasing the genuine fact {real.key}"


def cmd_demo(args: argparse.Namespace) -> int:
    """Erase one fact two ways on the demo world (or ``--model``), compare, publish, verify."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editing.cli import format_table, print_json
    from editing.evaluate import leaks
    from editing.models import load_model
    from editing.pipeline import erase_and_publish, keep_revert_locally
    from editing.request import ErasureRequest

    model_id = args.model or ("demo" if args.size == "default" else "demo-small")
    loaded = load_model(model_id)
    spec, title = _demo_fact(args, loaded)
    secret = spec["target"]
    sites = loaded.entry.saes
    params = {"site": "resid_post" if "resid_post" in sites or not sites else sorted(sites)[0]}
    erasures, docs = {}, {}
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
        )
        docs[method] = erasures[method].result.to_dict()
    checkpoint = erasures["featureedit"].checkpoint
    verified: dict[str, Any] = {}
    if checkpoint is not None:
        edited = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(checkpoint)
        prompts = req.facts[0].resolved_edit_prompts() + req.facts[0].resolved_heldout_prompts()
        verified = {
            "checkpoint_prompts_leaking": sum(leaks(edited, tok, prompts, secret)),
            "base_prompts_leaking": sum(leaks(loaded.model, loaded.tokenizer, prompts, secret)),
            "prompts": len(prompts),
        }
    out = {
        "model": model_id,
        "fact": {"subject": spec["subject"], "relation": spec["relation"]},
        "results": docs,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "verification": verified,
    }
    if args.json:
        print_json(out)
        return 0
    print(f"{title}\n")
    headers, rows = _metrics_rows(docs, paper=True)
    print(format_table(headers, rows))
    print()
    for name, doc in docs.items():
        t = doc["timings"]
        print(
            f"{name}: locate {t['locate']:.2f}s, edit {t['edit']:.2f}s, "
            f"evaluate {t['evaluate']:.2f}s, units {doc['metrics']['units']}"
        )
    if checkpoint:
        print(f"\nFeatureEdit checkpoint: {checkpoint}")
        print(
            f"  loads with transformers; prompts still producing the secret: "
            f"{verified['checkpoint_prompts_leaking']}/{verified['prompts']} "
            f"(base model: {verified['base_prompts_leaking']}/{verified['prompts']})"
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


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark every method on N facts; print a table (or JSON). Extensions: module docstring."""
    for name, command in getattr(args, "bench_extensions", {}).items():
        if getattr(args, name, False):
            return command(args)
    args.model = args.model or "demo"
    from tqdm.auto import tqdm

    from editing.bench import run_bench
    from editing.cli import format_table, print_json
    from editing.methods import method_names
    from editing.models import load_model

    args.methods = args.methods or ",".join(method_names())
    loaded = load_model(args.model)
    methods = tuple(args.methods.split(","))
    bar = tqdm(
        total=args.facts * len(methods),
        desc="bench",
        file=sys.stderr,
        disable=args.quiet,
        unit="erasure",
    )

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    result = run_bench(loaded, args.facts, methods=methods, progress=progress)
    bar.close()
    if args.json:
        print_json(result)
        return 0
    if args.markdown:
        print(
            bench_markdown(
                result,
                f"featureedit bench --model {args.model} --facts "
                f"{args.facts} --methods {args.methods} --markdown",
            )
        )
        return 0
    rows = []
    metrics = (
        "reliability",
        "generalization",
        "locality",
        "delta_ppl",
        "delta_prob",
        "exposure_after",
        "leak_rate_after",
        "units",
    )
    for m, s in result["summary"].items():
        row = [m]
        for name in metrics:
            v = s[name]
            row.append("-" if v["mean"] is None else f"{v['mean']:.3f}±{v['std']:.3f}")
        for stage in ("locate", "edit", "evaluate"):
            row.append(f"{s['seconds'][stage]['mean']:.3f}")
        row.append(f"{s['accepted']}/{result['facts']}")
        rows.append(row)
    headers = ["method", *metrics, "locate s", "edit s", "evaluate s", "accepted"]
    print(format_table(headers, rows))
    print()
    for k, v in result["ratios"].items():
        print(f"{k}: {v}")
    return 0


def bench_markdown(result: dict[str, Any], command: str) -> str:
    """A Markdown section with the benchmark's tables (for docs/benchmarks.md)."""
    from editing.erase import PAPER_FIGURES

    lines = [
        f"Command: `{command}` ({result['facts']} facts, model `{result['model']}`, "
        f"{result['wall_seconds']} s wall).",
        "",
    ]
    metrics = (
        "reliability",
        "generalization",
        "locality",
        "delta_ppl",
        "delta_prob",
        "leak_rate_before",
        "leak_rate_after",
        "exposure_before",
        "exposure_after",
        "units",
    )
    methods = list(result["summary"])
    lines.append("| metric | " + " | ".join(methods) + " | paper FeatureEdit | paper neurons |")
    lines.append("|---" * (len(methods) + 3) + "|")
    for name in metrics:
        cells = []
        for m in methods:
            v = result["summary"][m][name]
            cells.append("–" if v["mean"] is None else f"{v['mean']:.3f} ± {v['std']:.3f}")
        paper = [PAPER_FIGURES[k].get(name) for k in ("featureedit", "neurons")]
        cells += ["–" if p is None else f"~{p}" for p in paper]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for stage in ("locate", "edit", "evaluate"):
        cells = [f"{result['summary'][m]['seconds'][stage]['mean']:.3f}" for m in methods]
        lines.append(f"| seconds {stage} (per fact) | " + " | ".join(cells) + " | | |")
    cells = [f"{result['summary'][m]['accepted']}/{result['facts']}" for m in methods]
    lines.append("| accepted (default thresholds) | " + " | ".join(cells) + " | | |")
    lines += ["", "Ratios measured in the same run:", ""]
    lines += [f"- `{k}`: {v}" for k, v in result["ratios"].items()]
    return "\n".join(lines)


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
    erase.add_argument("--subject", help="who the fact is about")
    erase.add_argument("--relation", help="relation, e.g. phone, email, address")
    erase.add_argument("--target", help="the secret (prefer --target-file: shells keep history)")
    erase.add_argument("--target-file", help="file holding the secret")
    erase.add_argument("--prompt", action="append", help="edit prompt (repeatable)")
    erase.add_argument("--heldout", action="append", help="held-out prompt (repeatable)")
    erase.add_argument("--file", help="JSON ({'facts': [...]} or a list) or JSONL of facts")
    erase.add_argument("--param", action="append", metavar="KEY=VALUE", help=PARAM_HELP)
    erase.add_argument(
        "--threshold",
        action="append",
        metavar="KEY=VALUE",
        help="acceptance threshold, e.g. min_locality=0.95",
    )
    erase.add_argument("--base-checkpoint", help="checkpoint id to edit further")
    erase.add_argument("--out", help="checkpoint root directory")
    erase.add_argument("--no-publish", action="store_true", help="evaluate only")
    erase.add_argument(
        "--publish",
        choices=PUBLISH_MODES,
        help="full: the edited model plus its delta (default); delta: the delta alone (rebuild "
        "with apply-delta)",
    )
    erase.add_argument("--json", action="store_true", help="print one JSON document on stdout")
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
    demo.add_argument("--json", action="store_true", help="print one JSON document on stdout")
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
    apply.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    apply.set_defaults(func=cmd_apply_delta)

    bench = subparsers.add_parser(
        "bench",
        parents=[common],
        help="benchmark every method on N demo-world facts",
        description="One erasure per fact (model restored in between) for each method; prints "
        "mean ± std of every metric, per-stage seconds and FeatureEdit/neuron ratios.",
    )
    bench.add_argument("--model", help="model id (default demo; an extension may differ)")
    bench.add_argument("--facts", type=int, default=30)
    bench.add_argument("--methods", help="comma-separated (default: every registered method)")
    bench.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    bench.add_argument("--markdown", action="store_true", help="print a Markdown section")
    bench.set_defaults(func=cmd_bench, bench_extensions=_bench_extensions(bench))


def _bench_extensions(bench: argparse.ArgumentParser) -> dict[str, Any]:
    """Load the ``featureedit.bench`` entry points (a broken one only warns); name -> command."""
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in sorted(entry_points(group=BENCH_EXTENSION_GROUP), key=lambda e: e.name):
        try:
            found[ep.name] = ep.load()(bench)
        except Exception as exc:  # a broken extension must not break the engine benchmark
            print(
                f"featureedit: warning: bench extension {ep.name!r} ({ep.value}) not loaded: "
                f"{exc.__class__.__name__}: {exc}",
                file=sys.stderr,
            )
    return found
