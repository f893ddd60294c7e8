#!/usr/bin/env python3
"""CNN speed, side by side (issue 14 item 5): ResNet50, MobileNetV2 and EfficientNetB0 in
bnorm, Keras 3 (TensorFlow CPU) and PyTorch (torchvision), at 1 and 2 threads.

  python3 bench/cnn/run_cnn_bench.py [--threads 1,2] [--models resnet50,mobilenetv2,efficientnetb0]
                                     [--repeats R] [--repeats-b1 R1] [--warmup W] [--profile]

Cases (every model, every thread count):
  infer b1 / infer b32  224x224x3, include_top=True, 1000 classes (weights=None, seeded):
                        bnorm model.call(x, training=false), plain and after
                        nn::fold_batch_norm ("folded"); Keras the faster of model(x,
                        training=False) and predict_on_batch(x) (which one is recorded);
                        PyTorch eval() + torch.no_grad(), the faster of contiguous (NCHW)
                        and channels_last memory (which one is recorded).
  train b32             96x96x3, classes=10 (include_top=True: global average pooling +
                        Dense(10, softmax)), one step of SGD(0.01) on sparse categorical
                        cross-entropy: bnorm Model::train_on_batch, Keras train_on_batch,
                        PyTorch train() + zero_grad/forward/CrossEntropyLoss/backward/step
                        (torchvision model with num_classes=10; the faster memory format).

The Keras models are built once by the Keras worker (keras.applications.X(weights=None,
...), seeded) and saved as .keras files in --cache (default build-bench/cnn-models/);
bnorm_cnn_bench (bench/cnn/cnn_bench.cpp) and Keras time those same files. PyTorch builds
torchvision's models of the same architecture (its own random init; the timings do not
depend on the values).

Every figure is one process per (framework, model, case group, threads), W warm-up calls,
then R timed calls: the median and the minimum in milliseconds are recorded. The table
shows the medians; the ratios are (faster peer's median) / (bnorm's median), > 1 means
bnorm is faster. Thread counts: bnorm --threads N (its OpenMP teams, oneDNN through
OpenMP, OpenBLAS), Keras tf.config.threading intra- and inter-op N, PyTorch
torch.set_num_threads(N) and set_num_interop_threads(N); every process also gets
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS = N.

Interpreters: Keras in $BNORM_KERAS_PYTHON (default /tmp/venv-tf/bin/python, the fixture
venv: tensorflow-cpu 2.21.0, keras 3.15.1; else .venv-golden/bin/python); PyTorch in
$BNORM_TORCH_PYTHON (default /usr/bin/python3 with Debian's python3-torch 1.13.1 and
python3-torchvision 0.14.1). Writes bench/cnn/results.json (--out).
Worker mode (used by the driver): run_cnn_bench.py --worker keras-build|keras|torch ...
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_common import cpu_name, git_commit  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def _keras_python():
    if os.environ.get("BNORM_KERAS_PYTHON"):
        return os.environ["BNORM_KERAS_PYTHON"]
    for cand in ("/tmp/venv-tf/bin/python", os.path.join(ROOT, ".venv-golden", "bin", "python")):
        if os.path.exists(cand):
            return cand
    return "/tmp/venv-tf/bin/python"


KERAS_PYTHON = _keras_python()
TORCH_PYTHON = os.environ.get("BNORM_TORCH_PYTHON", "/usr/bin/python3")
# name: (Keras application, torchvision builder)
MODELS = {
    "resnet50": ("ResNet50", "resnet50"),
    "mobilenetv2": ("MobileNetV2", "mobilenet_v2"),
    "efficientnetb0": ("EfficientNetB0", "efficientnet_b0"),
}
INFER_SIZE, TRAIN_SIZE, TRAIN_CLASSES, TRAIN_BATCH = 224, 96, 10, 32


def model_file(cache, model, mode):
    return os.path.join(cache, f"{model}_{mode}.keras")


def stats(timing):
    ms, cpu = timing
    return {"ms": [round(v, 3) for v in ms], "median_ms": statistics.median(ms), "min_ms": min(ms),
            "cpu_median_ms": statistics.median(cpu)}


def timed(fn, warmup, repeats):
    """Wall and process CPU times (all threads) of `repeats` calls after `warmup` calls, ms."""
    for _ in range(warmup):
        fn()
    ms, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        ms.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return ms, cpu


# ----------------------------------------------------------------------------- workers

def keras_setup(threads):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    return tf, keras


def worker_keras_build(args):
    """Builds and saves every model file that is missing from the cache."""
    tf, keras = keras_setup(1)
    os.makedirs(args.cache, exist_ok=True)
    made = []
    for i, model in enumerate(args.models.split(",")):
        app = MODELS[model][0]
        for mode in ("infer", "train"):
            path = model_file(args.cache, model, mode)
            if os.path.exists(path):
                continue
            keras.utils.set_random_seed(1400 + i)
            keras.backend.clear_session()
            if mode == "infer":
                m = getattr(keras.applications, app)(weights=None, include_top=True,
                                                     input_shape=(INFER_SIZE, INFER_SIZE, 3), classes=1000)
            else:
                m = getattr(keras.applications, app)(weights=None, include_top=True,
                                                     input_shape=(TRAIN_SIZE, TRAIN_SIZE, 3), classes=TRAIN_CLASSES)
            m.save(path)
            made.append(os.path.basename(path))
    return {"built": made, "versions": {"keras": keras.__version__, "tensorflow": tf.__version__}}


def worker_keras(args):
    import numpy as np
    tf, keras = keras_setup(args.threads)
    out = []
    rs = np.random.RandomState(0)
    if args.mode == "infer":
        m = keras.models.load_model(model_file(args.cache, args.model, "infer"), compile=False)
        for b in (int(v) for v in args.batches.split(",")):
            x = rs.uniform(0, 1, (b, INFER_SIZE, INFER_SIZE, 3)).astype(np.float32)
            xt = tf.constant(x)
            reps = args.repeats_b1 if b == 1 else args.repeats
            ways = {
                "model(x, training=False)": lambda: m(xt, training=False).numpy(),
                "predict_on_batch": lambda: m.predict_on_batch(x),
            }
            cand = {}
            for name, fn in ways.items():
                cand[name] = stats(timed(fn, args.warmup, reps))
            best = min(cand, key=lambda k: cand[k]["median_ms"])
            rec = dict(cand[best])
            rec.update({"framework": "keras", "mode": "infer", "batch": b, "threads": args.threads,
                        "how": best, "alternatives": {k: v["median_ms"] for k, v in cand.items()}})
            out.append(rec)
    else:
        m = keras.models.load_model(model_file(args.cache, args.model, "train"), compile=False)
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="sparse_categorical_crossentropy")
        b = TRAIN_BATCH
        x = rs.uniform(0, 1, (b, TRAIN_SIZE, TRAIN_SIZE, 3)).astype(np.float32)
        y = (np.arange(b) * 7 % TRAIN_CLASSES).astype(np.float32)
        rec = stats(timed(lambda: m.train_on_batch(x, y), args.warmup, args.repeats))
        rec.update({"framework": "keras", "mode": "train", "batch": b, "threads": args.threads,
                    "how": "train_on_batch (SGD 0.01, jit_compile auto = off on CPU)"})
        out.append(rec)
    return {"records": out, "versions": {"keras": keras.__version__, "tensorflow": tf.__version__,
                                         "numpy": np.__version__}}


def fastest_layout(cand, mode, batch, threads, how):
    """The PyTorch record of the fastest memory format in cand ({format: stats}), with the
    others' medians kept as alternatives."""
    best = min(cand, key=lambda k: cand[k]["median_ms"])
    rec = dict(cand[best])
    rec.update({"framework": "torch", "mode": mode, "batch": batch, "threads": threads,
                "how": how + ", " + best,
                "alternatives": {k: v["median_ms"] for k, v in cand.items()}})
    return rec


def worker_torch(args):
    import torch
    import torchvision
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(args.threads)
    except RuntimeError:
        pass
    torch.manual_seed(0)
    builder = getattr(torchvision.models, MODELS[args.model][1])
    out = []
    formats = {"contiguous (NCHW)": torch.contiguous_format, "channels_last": torch.channels_last}
    if args.mode == "infer":
        m = builder(weights=None, num_classes=1000).eval()
        for b in (int(v) for v in args.batches.split(",")):
            reps = args.repeats_b1 if b == 1 else args.repeats
            cand = {}
            for name, fmt in formats.items():
                mf = m.to(memory_format=fmt)
                x = torch.rand(b, 3, INFER_SIZE, INFER_SIZE).contiguous(memory_format=fmt)

                def fn():
                    with torch.no_grad():
                        return mf(x)
                cand[name] = stats(timed(fn, args.warmup, reps))
            out.append(fastest_layout(cand, "infer", b, args.threads, "eval + no_grad"))
    else:
        b = TRAIN_BATCH
        cand = {}
        for name, fmt in formats.items():
            torch.manual_seed(0)
            m = builder(weights=None, num_classes=TRAIN_CLASSES).to(memory_format=fmt).train()
            opt = torch.optim.SGD(m.parameters(), lr=0.01)
            loss_fn = torch.nn.CrossEntropyLoss()
            x = torch.rand(b, 3, TRAIN_SIZE, TRAIN_SIZE).contiguous(memory_format=fmt)
            y = torch.arange(b) * 7 % TRAIN_CLASSES

            def step():
                opt.zero_grad()
                loss = loss_fn(m(x), y)
                loss.backward()
                opt.step()
                return loss.item()
            cand[name] = stats(timed(step, args.warmup, args.repeats))
        out.append(fastest_layout(cand, "train", b, args.threads, "train + SGD 0.01"))
    return {"records": out, "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__}}


# ----------------------------------------------------------------------------- driver

def find_bnorm_bin(given):
    if given:
        return given
    for cand in ("build-bench/bench/cnn/bnorm_cnn_bench", "build/bench/cnn/bnorm_cnn_bench"):
        path = os.path.join(ROOT, cand)
        if os.access(path, os.X_OK):
            return path
    sys.exit("bnorm_cnn_bench not found: build it with -DBNORM_BUILD_BENCH=ON (make bench-cnn does) "
             "or pass --bnorm-bin")


# bnorm-reuse: bnorm again, with glibc's malloc told to keep freed memory (no mmap, no
# trimming), so that a layer's output reuses the pages an earlier one freed instead of
# faulting fresh zeroed pages in (a diagnostic: docs/benchmarks.md, "CNN models").
MALLOC_REUSE = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"


OMP_PASSIVE = False  # --omp-passive


def thread_env(threads, reuse=False):
    env = dict(os.environ)
    if OMP_PASSIVE:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if reuse:
        env["GLIBC_TUNABLES"] = MALLOC_REUSE
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["KERAS_BACKEND"] = "tensorflow"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_proc(cmd, threads, label, reuse=False):
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=thread_env(threads, reuse), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.stderr and "--profile" in cmd:
        sys.stderr.write(proc.stderr)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise RuntimeError(f"{label} failed (rc {proc.returncode}):\n{tail}")
    return [json.loads(l) for l in lines], wall, load


def worker_cmd(python, kind, args, model, mode, threads):
    return [python, os.path.abspath(__file__), "--worker", kind, "--model", model, "--mode", mode,
            "--threads", str(threads), "--cache", args.cache, "--batches", args.batches,
            "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--repeats-b1", str(args.repeats_b1)]


def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def fmt_ratio(num, den):
    return f"{num / den:.2f}x" if num and den else "-"


def table(results, models, threads_list, batches):
    by = {}
    for r in results:
        key = (r["framework"], r["model"], r["case"], r["threads"], r.get("variant", ""))
        by[key] = r
    rows = []
    head = (f"{'model':<15} {'case':<9} {'thr':>3} | {'bnorm':>8} {'folded':>8} {'Keras':>8} {'PyTorch':>8} | "
            f"{'peer':>7} {'peer/bnorm':>10} {'peer/folded':>11} | {'reuse':>8} {'r.folded':>8} {'peer/reuse':>10}")
    rows.append("median ms per call (train: per step); ratio = faster peer / bnorm, > 1: bnorm faster; "
                "reuse: bnorm with malloc keeping freed memory (GLIBC_TUNABLES)")
    rows.append(head)
    rows.append("-" * len(head))
    cases = [f"infer b{b}" for b in batches] + [f"train b{TRAIN_BATCH}"]
    for model in models:
        for case in cases:
            for t in threads_list:
                get = lambda fw, variant="": by.get((fw, model, case, t, variant))
                b = get("bnorm", "plain" if case.startswith("infer") else "train_on_batch")
                f = get("bnorm", "folded") if case.startswith("infer") else None
                k, p = get("keras"), get("torch")
                rb = get("bnorm-reuse", "plain" if case.startswith("infer") else "train_on_batch")
                rf = get("bnorm-reuse", "folded") if case.startswith("infer") else None
                rbm = None if rb is None or rb.get("unsupported") else rb["median_ms"]
                rfm = None if rf is None or rf.get("unsupported") else rf["median_ms"]
                bm = None if b is None or b.get("unsupported") else b["median_ms"]
                fm = None if f is None or f.get("unsupported") else f["median_ms"]
                km = k["median_ms"] if k else None
                pm = p["median_ms"] if p else None
                peers = [(v, n) for v, n in ((km, "Keras"), (pm, "PyTorch")) if v]
                peer_ms, peer = min(peers) if peers else (None, "-")
                bs = "unsupp." if b is not None and b.get("unsupported") else fmt_ms(bm)
                rows.append(f"{model:<15} {case:<9} {t:>3} | {bs:>8} {fmt_ms(fm) if case.startswith('infer') else '':>8} "
                            f"{fmt_ms(km):>8} {fmt_ms(pm):>8} | {peer:>7} {fmt_ratio(peer_ms, bm):>10} "
                            f"{fmt_ratio(peer_ms, fm) if case.startswith('infer') else '':>11} | "
                            f"{fmt_ms(rbm):>8} {fmt_ms(rfm) if case.startswith('infer') else '':>8} "
                            f"{fmt_ratio(peer_ms, rbm):>10}")
    return "\n".join(rows)


def markdown(results):
    """The results as a Markdown table (docs/benchmarks.md): wall medians in ms, the process's CPU
    time per call in parentheses where it differs from the wall time by more than 25 %."""
    by = {(r["framework"], r["model"], r["case"], r["threads"], r.get("variant", "")): r for r in results}
    keys = sorted({(r["model"], r["case"], r["threads"]) for r in results},
                  key=lambda k: (list(MODELS).index(k[0]), k[1].startswith("train"), int(k[1].split("b")[-1]), k[2]))
    out = ["| model | case | thr | bnorm | bnorm folded | Keras 3 | PyTorch | faster peer | peer/bnorm | "
           "peer/folded | bnorm reuse | reuse folded |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(r):
        if r is None:
            return "-"
        if r.get("unsupported"):
            return "unsupported"
        v, c = r["median_ms"], r.get("cpu_median_ms")
        s = fmt_ms(v)
        if c is not None and abs(c - v) > 0.25 * v:
            s += f" ({fmt_ms(c)})"
        return s

    for model, case, t in keys:
        infer = case.startswith("infer")
        main_variant = "plain" if infer else "train_on_batch"
        b, f = by.get(("bnorm", model, case, t, main_variant)), by.get(("bnorm", model, case, t, "folded"))
        rb, rf = by.get(("bnorm-reuse", model, case, t, main_variant)), by.get(("bnorm-reuse", model, case, t, "folded"))
        k, p = by.get(("keras", model, case, t, "")), by.get(("torch", model, case, t, ""))
        peers = [(r["median_ms"], n) for r, n in ((k, "Keras"), (p, "PyTorch")) if r]
        peer_ms, peer = min(peers) if peers else (None, "-")
        med = lambda r: None if r is None or r.get("unsupported") else r["median_ms"]
        out.append(f"| {model} | {case} | {t} | {cell(b)} | {cell(f) if infer else ''} | {cell(k)} | {cell(p)} | "
                   f"{peer} | {fmt_ratio(peer_ms, med(b))} | {fmt_ratio(peer_ms, med(f)) if infer else ''} | "
                   f"{cell(rb)} | {cell(rf) if infer else ''} |")
    return "\n".join(out)




def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["keras-build", "keras", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["infer", "train"], help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated models (default all three)")
    ap.add_argument("--frameworks", default="bnorm,bnorm-reuse,keras,torch",
                    help="any of bnorm, bnorm-reuse (bnorm with GLIBC_TUNABLES=" + MALLOC_REUSE + "), keras, "
                         "torch (default all)")
    ap.add_argument("--cases", default="infer,train", help="infer, train or both (default both)")
    ap.add_argument("--batches", default="1,32", help="inference batch sizes (default 1,32)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls before the timed ones (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls, batch 32 and training (default 3)")
    ap.add_argument("--repeats-b1", type=int, default=10, help="timed calls at batch 1 (default 10)")
    ap.add_argument("--profile", action="store_true", help="bnorm_cnn_bench --profile (per-layer times to stderr)")
    ap.add_argument("--cache", default=os.path.join(ROOT, "build-bench", "cnn-models"),
                    help="folder for the Keras model files (default build-bench/cnn-models)")
    ap.add_argument("--omp-passive", action="store_true",
                    help="OMP_WAIT_POLICY=PASSIVE for every process (OpenMP threads sleep at once instead of "
                         "spinning: helps on an oversubscribed machine)")
    ap.add_argument("--bnorm-bin", default=None, help="path to bnorm_cnn_bench")
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--markdown", metavar="RESULTS_JSON",
                    help="print the results of an earlier run as a Markdown table and stop")
    args = ap.parse_args()

    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)["results"]))
        return
    if args.worker:
        if args.worker != "keras-build":
            args.threads = int(args.threads)
        rec = {"keras-build": worker_keras_build, "keras": worker_keras, "torch": worker_torch}[args.worker](args)
        print(json.dumps(rec))
        return

    global OMP_PASSIVE
    OMP_PASSIVE = args.omp_passive
    threads_list = [int(t) for t in args.threads.split(",") if t]
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            sys.exit(f"unknown model {m!r}; known: {', '.join(MODELS)}")
    frameworks = [f for f in args.frameworks.split(",") if f]
    cases = [c for c in args.cases.split(",") if c]
    batches = [int(b) for b in args.batches.split(",") if b]
    bnorm_bin = find_bnorm_bin(args.bnorm_bin) if {"bnorm", "bnorm-reuse"} & set(frameworks) else None
    start = time.perf_counter()

    built, _, _ = run_proc([KERAS_PYTHON, os.path.abspath(__file__), "--worker", "keras-build", "--models",
                            ",".join(models), "--cache", args.cache], 1, "building the Keras models")
    if built[0]["built"]:
        print(f"built {', '.join(built[0]['built'])} in {args.cache}", file=sys.stderr)
    versions = dict(built[0]["versions"])

    results = []
    for model in models:
        for mode in cases:
            for t in threads_list:
                for fw in frameworks:
                    if fw in ("bnorm", "bnorm-reuse"):
                        cmd = [bnorm_bin, "--model", model_file(args.cache, model, mode), "--mode", mode,
                               "--threads", str(t), "--warmup", str(args.warmup)]
                        if mode == "infer":
                            cmd += ["--batches", args.batches]
                        else:
                            cmd += ["--batch", str(TRAIN_BATCH)]
                        recs = []
                        # bnorm's batch-1 and batch-32 repeat counts differ: one process each.
                        groups = [[b] for b in batches] if mode == "infer" else [[TRAIN_BATCH]]
                        wall = 0.0
                        for g in groups:
                            reps = args.repeats_b1 if g == [1] else args.repeats
                            c = list(cmd)
                            if mode == "infer":
                                c[c.index("--batches") + 1] = ",".join(map(str, g))
                            c += ["--repeats", str(reps)] + (["--profile"] if args.profile else [])
                            r, w, load = run_proc(c, t, f"{fw} {model} {mode} threads={t}",
                                                  reuse=fw == "bnorm-reuse")
                            recs += r
                            wall += w
                    else:
                        python = KERAS_PYTHON if fw == "keras" else TORCH_PYTHON
                        out, wall, load = run_proc(worker_cmd(python, fw, args, model, mode, t), t,
                                                   f"{fw} {model} {mode} threads={t}")
                        recs = out[-1]["records"]
                        versions.update(out[-1]["versions"])
                    for r in recs:
                        r["model"] = model
                        r["framework"] = fw
                        r["case"] = f"{mode} b{r['batch']}"
                        r["load_average_before"] = load
                        results.append(r)
                        what = r.get("variant") or r.get("how", "")
                        shown = "unsupported: " + r["unsupported"] if r.get("unsupported") else \
                            f"median {r['median_ms']:.1f} ms, min {r['min_ms']:.1f} ms"
                        print(f"  {fw:<6} {model:<15} {r['case']:<9} threads={t} {what}: {shown} "
                              f"(load {load:.1f})", file=sys.stderr, flush=True)

    commit = git_commit(ROOT)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_name(), "cores": os.cpu_count(), "load_average_after": os.getloadavg(),
            "python_keras": KERAS_PYTHON, "python_torch": TORCH_PYTHON, "versions": versions,
            "warmup": args.warmup, "repeats": args.repeats, "repeats_b1": args.repeats_b1,
            "omp_wait_policy": "PASSIVE" if args.omp_passive else "default",
            "bnorm_commit": commit, "total_seconds": round(time.perf_counter() - start, 1)}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(f"{meta['cpu']}, {meta['cores']} cores; " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    print(table(results, models, threads_list, batches))
    print(f"(total {meta['total_seconds']} s; results in {os.path.relpath(args.out)})")


if __name__ == "__main__":
    main()
