"""Issue 70, item 3: the validation metrics of a run's saved step, measured by the code of the
checkout it runs in (run it from the worktree of the commit that trained the run, with
--config.eval_batches large enough to read the whole held-out split).

An experiment harness, not a product script: it runs train.py's own command line on a copy of
the run's workdir, resumed at its last step with `--stop_at_step` one further, and with the
training step replaced by one that leaves the state as it is. The loop then evaluates at its
end exactly the saved parameters (logged under the next step's number) with every other part
of the run as train.py builds it: the config, the datasets, the statistics, the model.

    python docs/benchmarks/issue70_item3/evaluate_saved_step.py COPY_OF_WORKDIR -- TRAIN_FLAGS
"""

import os
import runpy
import sys

sys.path.insert(0, os.getcwd())  # the checkout's package, not the one installed in the venv

try:  # the training rooms of 2026-11-29 (issue 71)
    from octo_like.training.run import train_program
    from octo_like.training.run.step import TrainState
except ImportError:  # the flat training package of earlier commits (6f789e1, fb54088)
    from octo_like.training.step import TrainState

    from octo_like.training import train_program

making = train_program.make_steps


def make_steps_that_do_not_train(*args, **kwargs):
    _, eval_step = making(*args, **kwargs)

    def train_step(state: TrainState, batch: dict):
        metrics = eval_step(state, batch)  # the loop logs a training window: give it numbers
        return TrainState(state.step + 1, state.params, state.opt_state, state.ema_params), metrics

    return train_step, eval_step


train_program.make_steps = make_steps_that_do_not_train
flags = sys.argv[sys.argv.index("--") + 1 :]
sys.argv = ["train.py", "--workdir", sys.argv[1], *flags]
runpy.run_path("train.py", run_name="__main__")
