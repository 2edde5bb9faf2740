"""How much of sampled generation is the prompts' prefill (issue #16: would sharing it pay?).

Loads the model once and takes the edit and held-out prompts of the first N private facts of
its demo world (the sampled attack's and the leak rate's prompts). Per round it times
:func:`editing.evaluate.sample_continuations` (``--samples`` per prompt, as the attack suite
samples them), then one forward pass over the same rows in the same padded batches with the LM
head at the last position only: the prefill every row pays today. Sharing a prompt's prefix
across its samples would save at most that share (less the cost of copying the cache):

    OMP_NUM_THREADS=1 FEATUREEDIT_HOME=... python scripts/sampling_prefill_share.py --facts 10
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    """Parse the options and print, per round, generation and prefill seconds and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo-small")
    ap.add_argument("--facts", type=int, default=10)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from editing.evaluate import _new_tokens, sample_continuations
    from editing.models import load_model
    from editing.request import FactSpec
    from editing.scoring import by_length, default_batch_size, encode_texts, padded
    from editing.world.build import load_world

    loaded = load_model(args.model)  # the home comes from the settings (FEATUREEDIT_HOME)
    world = load_world(loaded.entry.demo_size or "default", loaded.home, progress=False)
    groups = []
    for f in world.private_facts()[: args.facts]:
        spec = FactSpec(subject=f.subject, relation=f.relation, target=f.target)
        groups.append((spec.resolved_edit_prompts() + spec.resolved_heldout_prompts(), f.target))
    prompts = [p for ps, _ in groups for p in ps]
    model, tok = loaded.model, loaded.tokenizer
    n_new = _new_tokens(tok, groups, 4)
    rows = encode_texts(tok, [p for p in prompts for _ in range(args.samples)])
    limits = [int(n) for n in n_new for _ in range(args.samples)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = next(model.parameters()).device
    for rnd in range(args.rounds):
        t0 = time.perf_counter()
        sample_continuations(model, tok, prompts, n_new, args.samples)
        generate = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.inference_mode():
            for chunk in by_length(rows, default_batch_size(model), limits):
                ids, mask = padded([rows[i] for i in chunk], pad, device, left=True)
                model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
        prefill = time.perf_counter() - t0
        print(
            f"round {rnd + 1}: {len(prompts)} prompts x {args.samples} samples: generate "
            f"{generate:.2f} s, prefill {prefill:.2f} s ({100 * prefill / generate:.1f} %); "
            f"per row {sum(len(r) for r in rows) / len(rows):.1f} prompt tokens, "
            f"{sum(limits) / len(limits):.1f} new tokens",
            flush=True,
        )


if __name__ == "__main__":
    main()
