#!/bin/sh
# Issue 70 item 4: the transfer arms over the 3 pretraining runs (after pretrain.sh has made them).
while [ "$(grep -c '^pretrain seed [012] exit 0' /work/i70_item4/done.txt 2>/dev/null)" != 3 ]; do
  [ -e /work/i70_item4/pause ] && exit 0; sleep 30; done
[ -e /work/i70_item4/pause ] && exit 0
P=/work/i70_item4/pretrain_seed
cd /work/i70_arms || exit 1
start=$(date +%s)
/work/main/.venv/bin/python scripts/benchmark_transfer.py --workdir /work/i70_item4/transfer \
  --data_dir /work/i67_runs/data --pretrained ${P}0/checkpoints,${P}1/checkpoints,${P}2/checkpoints \
  --target metric7=drawer-open,button-press-topdown@metric7 --modes full --demos 50 --collect_demos 50 \
  --steps 600 --batch_size 32 --seeds 0,1,2 --eval_episodes 20 --max_steps 150 --exec_horizon 2 \
  --finetune_arg=--config.optimizer.learning_rate=3e-4 --no_crop --no_zero_shot \
  >> /work/i70_item4/arms.log 2>&1
echo "arms exit $? in $(( $(date +%s) - start )) s, commit $(git -C /work/i70_arms rev-parse --short HEAD), $(date -u)" >> /work/i70_item4/done.txt
