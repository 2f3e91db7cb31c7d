"""Issue 13, second GPU job: seeds in one program by convolution implementation, and the train loop's own overhead.

Usage: PYTHONPATH=. python3 scripts/gpu/seeds.py DATA_DIR OUT_DIR
"""
import json
import sys
import time

from glocal_cli import bench

data, out = sys.argv[1], sys.argv[2]
res = {}


def save():
    with open(f"{out}/seeds_conv.json", "w") as f:
        json.dump(res, f, indent=1)


t0 = time.time()
for conv, vg in (("patches", "reverse"), ("patches", "forward"), ("lax", "forward")):
    s = bench.bench_settings(data_dir=data, windows=8, seed_counts=(1, 5), conv_impl=conv, val_grad=vg)
    r = bench.time_seed_groups(s, print)
    res[f"{conv}/{vg}"] = r
    print(conv, vg, json.dumps(r["window_s"]), json.dumps(r["time_over_one"]), f"{time.time() - t0:.0f}s", flush=True)
    save()
# the loop's own overhead: no evaluation, no checkpoint, T = 20 000, against S = 1 windows timed in the same process
s = bench.bench_settings(data_dir=data, windows=8, seed_counts=(1,), train_windows=400, eval_every=0, checkpoint_every=0)
ref = bench.time_seed_groups(s, print, methods=("none", "local"))["window_s"]
res["train_no_eval_no_ckpt"] = bench.time_train(s, {m: ref[m][1] for m in ref}, print, methods=("none", "local"))
res["train_reference_window_s"] = ref
print(json.dumps(res["train_no_eval_no_ckpt"], indent=1), f"{time.time() - t0:.0f}s", flush=True)
save()
