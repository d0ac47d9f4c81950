"""Does pretraining pay? Fine-tuning vs training from scratch on held-out tasks and new robots.

    python scripts/benchmark_transfer.py --workdir runs/transfer \
        --pretrain_config laptop_broad --held_out family:door,family:coffee,family:plate \
        --target test=door-open,door-close,coffee-button,coffee-push,plate-slide \
        --target metric7=drawer-open,button-press-topdown@metric7 \
        --modes full --demos 5,10,25,50 --steps 1000 --seeds 0,1,2,3,4 --eval_episodes 20 \
        --exec_horizon 2

1. Pretrains with `train.py` (configs/pretrain.py:--pretrain_config, minus the --held_out tasks
   and task families, with any --pretrain_arg=--config.KEY=VALUE) unless --pretrained names a
   checkpoint to reuse; a finished pretraining in the workdir is reused too. A target that
   would fine-tune, on an embodiment pretraining saw, to a task pretraining had demonstrations
   of is refused (that measures recall, not transfer).
2. Collects the largest --demos count of scripted-expert demonstrations per task of each
   --target (``NAME=TASK,TASK[@VARIANT]``; the variant is the embodiment, default the pretrained
   checkpoint's own, e.g. `front` for a `laptop_long` checkpoint) with a collection seed the
   pretraining data did not use. Each seed draws, per task, nested subsets for the other counts
   (its 5 inside its 10; ``demo_subsets/<target>.json`` names them as TFDS split strings).
3. Trains every arm with `finetune.py`: each --modes mode and `scratch` (the same model, data,
   data order, optimizer and steps with no pretrained weight reused), once per --seeds seed and
   --demos count; both arms of a seed read the same demonstrations (paired). Cameras the
   pretrained model lacks (the `wrist` variant's wrist camera) get new tokenizers.
4. Evaluates each arm closed-loop with `evaluate.py` on the same scenes (--eval_seed), with the
   same execution for every arm (--execution, --exec_horizon, --ensemble_decay, --max_steps);
   and the pretrained checkpoint itself (rows `zero_shot`): on each target it can act in, and
   on --own_tasks, a sample of its own pretraining tasks (target `own`).
5. Writes ``<workdir>/transfer.txt`` (header: the budget, the commit and CPU model every arm
   ran at, this command; then success +- 95% interval per arm, count and task, per-seed rates,
   each mode's gap to scratch pooled (Newcombe) and paired over seeds (t interval; bootstrap
   from 10 seeds)), ``transfer.png`` (bars, or success against demonstrations when several
   counts) and ``transfer.jsonl``; the last line printed is the same JSON line. Arms of several
   commits or CPU models are refused unless --allow_mixed_provenance (then: MIXED). --report
   renames the three files; another --instruction or --select writes ``transfer-empty.*``,
   ``transfer-val_loss.*``..., beside the canonical report rather than over it.
6. With several pretraining runs, --pretrained A,B,C (checkpoints) or --pretrain_seeds 0,1,2
   (step 1 once per seed, train.py with --config.seed=K), runs steps 1-5 once per run in
   ``<workdir>/pretraining/<run>/`` (``run<i>`` / ``seed<K>``: its pretraining, results and
   report), every run collecting into one --data_dir, so a seed reads the same demonstrations
   under every run. Scratch arms train only under the first run and pair with every run's
   fine-tuned arms when they read no pretrained weight (no checkpoint with a frozen T5, the same
   architecture and tokenizer in all); otherwise under each run. Then writes
   ``<workdir>/transfer_pretraining.txt`` / ``.jsonl`` (JSON line printed last): per target,
   count and arm, each run's successes and paired gap to scratch; pooled, the mean gap with a t
   95% interval for seeds crossed with runs (Satterthwaite df); and the fine-tuned success
   rate's standard deviation between pretraining runs and between fine-tuning seeds (two-way
   ANOVA; evaluation noise beside them), with the F test of a run effect.
   One pretraining run is steps 1-5 in the workdir itself, as without these flags.

Every arm's result is saved as ``results/<execution>/<target>/<N>demos/<mode>/seed<k>.json``
when it finishes, with the command that made it, so an interrupted benchmark resumes where it
stopped (delete a file to redo that arm); one made by another command is refused, not reused.
Several pretraining runs resume the same way, run by run (shared scratch arms are saved under
the first run only).
Arms run in this process, one at a time, through the entry points' own command-line parsers:
the commands logged are the ones a user would run. The logic is
`octo_like.envs.transfer.transfer_benchmark` (flags and run), `transfer_arms`, `demo_subsets`,
`transfer_scope` (leak checks), `transfer_summary` and `transfer_report`, `pretraining_runs`,
`pretraining_variance` and `pretraining_report` (several pretraining runs); this file hands it
the entry points it trains with (train.py, finetune.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # train.py, finetune.py
    sys.path.insert(0, REPO)


def parse_args(argv=None) -> argparse.Namespace:
    from octo_like.envs.transfer.transfer_benchmark import parse_args as parse

    return parse(argv, description=__doc__.split("\n")[0])


def entry_points():
    """The programs the pretraining and every arm run through, as a user would run them."""
    import finetune
    import train
    from octo_like.envs.transfer.transfer_scope import EntryPoints

    return EntryPoints(os.path.join(REPO, "configs"), train, finetune)


def main(argv=None) -> list[dict]:
    """Runs the benchmark; returns the report's summary rows (the last line printed is JSON)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from octo_like.envs.transfer.transfer_benchmark import run

    return run(parse_args(argv), entry_points())


if __name__ == "__main__":
    main()
