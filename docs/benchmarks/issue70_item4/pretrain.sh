#!/bin/sh
# Issue 70 item 4: the 3 pretraining runs. Each continues item 3's HEAD run of its seed
# (/work/i70_item3/head_seed<k>, 1,500 steps at 4723213) to the laptop_broad command's 6,000 steps,
# from the same worktree (so the whole run is at one commit), saving every 500 steps so an
# interrupted sitting loses little. Waits for item 3's queue first (one run at a time).
HELD=family:door,family:coffee,family:plate,family:window,family:faucet
while pgrep -f "sh ./queue.sh" > /dev/null; do sleep 20; done
for k in 0 1 2; do
  W=/work/i70_item4/pretrain_seed$k
  grep -q "^pretrain seed $k exit 0" /work/i70_item4/done.txt 2>/dev/null && continue
  [ -e /work/i70_item4/pause ] && exit 0
  grep -q "^head seed $k exit 0" /work/i70_item3/done.txt || { echo "no head seed $k"; exit 1; }
  if [ ! -d "$W" ]; then
    mkdir -p "$W"
    cp -r /work/i70_item3/head_seed$k/config.json /work/i70_item3/head_seed$k/metrics.jsonl \
      /work/i70_item3/head_seed$k/checkpoints /work/i70_item3/head_seed$k/compilation_cache "$W/"
  fi
  start=$(date +%s)
  cd /work/i70_head || exit 1
  /work/main/.venv/bin/python train.py --config configs/pretrain.py:laptop_broad --workdir "$W" \
    --config.simulation.held_out=$HELD --config.simulation.cache_dir=/work/i70_cache \
    --config.seed=$k --config.checkpoint.save_every=500 >> /work/i70_item4/pretrain_seed$k.log 2>&1
  echo "pretrain seed $k exit $? in $(( $(date +%s) - start )) s, commit $(git -C /work/i70_head rev-parse --short HEAD), $(date -u)" >> /work/i70_item4/done.txt
done
