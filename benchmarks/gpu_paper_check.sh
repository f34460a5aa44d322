#!/bin/bash
# Issue 17's GPU checks in one go, from the repository root on a CUDA machine: the lora_round
# benchmark alone, then Figs. 4 (QNLI) and 2 (SST-2 at K = K2: 100, or 20,50,100 for claim 2a)
# at the paper's scale side by side, one process a scheme (Fig. 4's energy scheme with the
# proposed run it is budgeted from);
# logs, the claims rows 2a, 2b, 4a-4c on the global metric (claims.md, benchmarks/gpu_claims.py)
# and a tarball of the run folders (fig4a-c, fig2a-d: each one figure run) under $OUT.
#   OUT=results/gpu R4=200 R2=150 K2=100 bash benchmarks/gpu_paper_check.sh SECONDS_PER_FIGURE
# MODEL_DIR: a local copy of the model (default .gpu/minilm: e.g. an fp16 save_pretrained copy
# of the packaged MiniLM, loaded back as fp32); FEDOPT_DATA: the GLUE folder (default .gpu/glue).
# fedopt is imported from a copy of this checkout, so nothing needs installing there.
# docs/RESULTS.md ("lora backend on a GPU") has what one 15-minute H200 session measured.
FIGS=${1:-3600}
OUT=${OUT:-results/gpu}; mkdir -p $OUT; OUT=$(cd $OUT && pwd)
R4=${R4:-200}; R2=${R2:-150}; K2=${K2:-100}
MODEL_DIR=${MODEL_DIR:-$PWD/.gpu/minilm}
Q=${QUICK:+--quick}  # QUICK=1: a CPU rehearsal of this script
DEV=${QUICK:+cpu}; DEV=${DEV:-cuda}
R=$PWD
export HF_HUB_OFFLINE=1 FEDOPT_DATA=${FEDOPT_DATA:-$R/.gpu/glue} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
D=/tmp/gpkg; rm -rf $D; mkdir -p $D
cp -r $R/fedopt $D/fedopt; rm -rf $D/fedopt/models $D/fedopt/solvers
cp -r $R/models $D/fedopt/models; cp -r $R/solvers $D/fedopt/solvers
export PYTHONPATH=$D PYTHONSAFEPATH=1  # not the checkout's fedopt/ (no solvers/ mapping there)
S=$SECONDS
{ nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  python3 -c "import torch,transformers,peft,numpy,scipy;print('torch',torch.__version__,'cuda',torch.cuda.is_available(),'transformers',transformers.__version__,'peft',peft.__version__,'numpy',numpy.__version__,'scipy',scipy.__version__)";
  nproc; } > $OUT/env.txt 2>&1
echo "env done at $((SECONDS-S)) s" >> $OUT/env.txt

# 1. benchmark, alone on the GPU
timeout 65 python3 benchmarks/lora_round.py $Q --device $DEV --dtype float32,bfloat16 \
  --max-seconds 55 --out $OUT/bench.json > $OUT/bench.log 2>&1
echo "bench rc=$? done at $((SECONDS-S)) s" >> $OUT/env.txt

# 2. the figures: one config part a scheme, run side by side
rm -rf /tmp/r; mkdir -p /tmp/cfg /tmp/r
R4=$R4 R2=$R2 K2=$K2 python3 - <<'E'
import os
import yaml
for fig, parts in (("fig4", (["proposed", "energy"], ["greedy"], ["one_shot"])),
                   ("fig2", (["proposed"], ["fedlora"], ["hetlora"], ["flexlora"]))):
    cfg = yaml.safe_load(open(f"experiments/configs/{fig}_paper.yaml"))
    cfg["run"]["rounds"] = int(os.environ[{"fig4": "R4", "fig2": "R2"}[fig]])
    if fig == "fig2":
        cfg["K"] = [int(k) for k in os.environ["K2"].split(",")]
    for tag, schemes in zip("abcd", parts):
        cfg["schemes"] = schemes
        yaml.safe_dump(cfg, open(f"/tmp/cfg/{fig}{tag}.yaml", "w"))
E
run() {  # name fig jobs
  local t0=$SECONDS
  timeout $FIGS python3 -m fedopt experiment $2 --backend lora --config /tmp/cfg/$1.yaml \
    --set model=$MODEL_DIR --set threads=2 --set checkpoint_every=10 --out /tmp/r/$1 --jobs $3 \
    --overwrite $Q > /tmp/r/$1.log 2>&1  # a part cut by the limit leaves its rounds in checkpoints
  echo "$1 rc=$? wall=$((SECONDS-t0)) s" >> /tmp/r/times.txt
}
run fig4a fig4 1 & run fig4b fig4 1 & run fig4c fig4 1 &
run fig2a fig2 1 & run fig2b fig2 1 & run fig2c fig2 1 & run fig2d fig2 1 &
( while sleep 20; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; done ) > /tmp/r/gpu_util.txt 2>&1 &
MON=$!
( while sleep 30; do tar czf /tmp/snap.tgz --exclude="*.npz" -C /tmp/r . 2>/dev/null && mv /tmp/snap.tgz $OUT/runs.tgz; done ) &
SNAP=$!
wait %1 %2 %3 %4 %5 %6 %7
kill $MON $SNAP
cat /tmp/r/times.txt >> $OUT/env.txt
echo "figs done at $((SECONDS-S)) s" >> $OUT/env.txt
python3 benchmarks/gpu_claims.py /tmp/r > $OUT/claims.md 2>&1  # finished parts and cut ones
for f in /tmp/r/fig*.log; do tail -c 200000 $f > $f.t && mv $f.t $f; done  # tqdm-heavy
tar czf $OUT/runs.tgz --exclude="*.npz" -C /tmp/r . && ls -la $OUT >> $OUT/env.txt
