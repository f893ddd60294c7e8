#!/usr/bin/env python3
"""Training speed of bnorm next to Keras (TensorFlow CPU) and PyTorch (issue 3, item 8).

Trains the same small models for a fixed number of epochs in the three frameworks, each
run in a fresh process with the same thread count, and prints seconds per epoch and the
ratios bnorm / Keras and bnorm / PyTorch. Writes bench/training/results.json.

Models (bnorm_train_bench.cpp builds the same ones):
  dense64  article 003: Dense(64) -> BatchNormalization -> relu -> Dense(1), mse, Adam;
           1,100 x 10 standard-normal inputs, standard-normal targets; batch 32.
  mlp784   784-100-100-100-10: Dense(100) -> BatchNormalization -> sigmoid three times,
           then Dense(10) with softmax / cross-entropy; SGD(lr 0.01); batch 60; the first
           12,000 Fashion-MNIST training images (/usr/share/datasets/fashion-mnist) / 255.
Timing: wall clock from epoch begin to epoch end (Keras and bnorm: a callback;
PyTorch: around the loop). The first epoch (tracing, allocation, thread start) is
reported apart; seconds_per_epoch is the median of the other epochs.

Usage (from the repository root):
  python3 bench/training/run_training_bench.py                 # 2 and 1 threads
  python3 bench/training/run_training_bench.py --threads 2     # 2 threads only
The bnorm binary is looked for in build-train-bench/ and build/bench/training/ (or
--bnorm-bin); when missing it is built standalone:
  cmake -S bench/training -B build-train-bench -DCMAKE_BUILD_TYPE=Release
  cmake --build build-train-bench -j 2 --target bnorm_train_bench
Keras and PyTorch run in the interpreters $BNORM_KERAS_PYTHON and $BNORM_TORCH_PYTHON;
by default .venv-golden/bin/python (created by tests/fixtures/generate_golden.py --setup)
or, failing that, /opt/venvs/tf and /opt/venvs/torch.
Worker mode (used by the driver): run_training_bench.py --worker keras|torch --model M ...
"""
import argparse
import datetime
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_common import cpu_name, git_commit  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def _default_python(env_name, fallback):
    """The interpreter for one framework: $ENV_NAME, else the fixture generator's
    .venv-golden (python3 tests/fixtures/generate_golden.py --setup creates it with the
    pinned TensorFlow/Keras/PyTorch), else FALLBACK."""
    if os.environ.get(env_name):
        return os.environ[env_name]
    golden = os.path.join(ROOT, ".venv-golden", "bin", "python")
    return golden if os.path.exists(golden) else fallback


KERAS_PYTHON = _default_python("BNORM_KERAS_PYTHON", "/opt/venvs/tf/bin/python")
TORCH_PYTHON = _default_python("BNORM_TORCH_PYTHON", "/opt/venvs/torch/bin/python")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
MODELS = {
    # name: (batch size, default epochs, description)
    "dense64": (32, 20, "Dense(64)-BN-relu-Dense(1), 1100x10, adam/mse, batch 32"),
    "mlp784": (60, 4, "784-100-100-100-10 sigmoid+BN, 12000 Fashion-MNIST, sgd, batch 60"),
}


# ----------------------------------------------------------------------------- data

def load_data(model, samples):
    import numpy as np
    if model == "dense64":
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1100, 10)).astype(np.float32)
        y = rng.standard_normal((1100, 1)).astype(np.float32)
        return x, y
    with gzip.open(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz"), "rb") as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(FASHION_DIR, "train-labels-idx1-ubyte.gz"), "rb") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    x = (images[:samples].astype(np.float64) / 255.0).astype(np.float32)
    y = labels[:samples].astype(np.int64)
    return x, y


# ----------------------------------------------------------------------------- workers

def worker_keras(args):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras
    from keras import layers
    keras.utils.set_random_seed(0)

    x, y = load_data(args.model, args.samples)
    batch = MODELS[args.model][0]
    if args.model == "dense64":
        model = keras.Sequential([keras.Input((10,)), layers.Dense(64), layers.BatchNormalization(),
                                  layers.Activation("relu"), layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
    else:
        stack = [keras.Input((784,))]
        for _ in range(3):
            stack += [layers.Dense(100), layers.BatchNormalization(), layers.Activation("sigmoid")]
        stack.append(layers.Dense(10, activation="softmax"))
        model = keras.Sequential(stack)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        y = y.astype(np.float32)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self.loss = [], float("nan")

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.t0)
            self.loss = float((logs or {}).get("loss", float("nan")))

    timer = EpochTimer()
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=args.epochs, verbose=0, callbacks=[timer])
    total = time.perf_counter() - t0
    return {"framework": "keras", "model": args.model, "threads": args.threads, "samples": int(x.shape[0]),
            "batch_size": batch, "epochs": args.epochs, "epoch_seconds": timer.seconds, "fit_seconds": total,
            "final_loss": timer.loss,
            "versions": {"keras": keras.__version__, "tensorflow": tf.__version__, "numpy": np.__version__}}


def worker_torch(args):
    import numpy as np
    import torch
    from torch import nn
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(0)

    x, y = load_data(args.model, args.samples)
    batch = MODELS[args.model][0]
    # Keras's batch-normalization defaults (epsilon 1e-3, momentum 0.99 = torch 0.01).
    def bn(c):
        return nn.BatchNorm1d(c, eps=1e-3, momentum=0.01)

    if args.model == "dense64":
        model = nn.Sequential(nn.Linear(10, 64), bn(64), nn.ReLU(), nn.Linear(64, 1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        loss_fn = nn.MSELoss()
    else:
        stack = []
        for k in (784, 100, 100):
            stack += [nn.Linear(k, 100), bn(100), nn.Sigmoid()]
        stack.append(nn.Linear(100, 10))  # softmax folded into CrossEntropyLoss
        model = nn.Sequential(*stack)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n = xt.shape[0]
    model.train()
    seconds, last = [], float("nan")
    t_fit = time.perf_counter()
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n)
        total = 0.0
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            xb, yb = xt[idx], yt[idx]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * idx.shape[0]
        seconds.append(time.perf_counter() - t0)
        last = total / n
    fit_total = time.perf_counter() - t_fit
    return {"framework": "torch", "model": args.model, "threads": args.threads, "samples": int(n),
            "batch_size": batch, "epochs": args.epochs, "epoch_seconds": seconds, "fit_seconds": fit_total,
            "final_loss": last, "versions": {"torch": torch.__version__, "numpy": np.__version__}}


# ----------------------------------------------------------------------------- driver

def find_bnorm_bin(given):
    if given:
        return given
    for cand in ("build-train-bench/bnorm_train_bench", "build/bench/training/bnorm_train_bench",
                 "build-bench/bench/training/bnorm_train_bench"):
        path = os.path.join(ROOT, cand)
        if os.access(path, os.X_OK):
            return path
    build = os.path.join(ROOT, "build-train-bench")
    print("bnorm_train_bench not found; building it in build-train-bench/ ...", file=sys.stderr)
    subprocess.run(["cmake", "-S", HERE, "-B", build, "-DCMAKE_BUILD_TYPE=Release"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build, "-j", str(os.cpu_count() or 2), "--target", "bnorm_train_bench"],
                   check=True, stdout=subprocess.DEVNULL)
    return os.path.join(build, "bnorm_train_bench")


def thread_env(threads, omp_passive=False):
    env = dict(os.environ)
    if omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS"):
        env[var] = str(threads)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["KERAS_BACKEND"] = "tensorflow"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_one(framework, model, threads, epochs, samples, bnorm_bin, omp_passive=False):
    if framework == "bnorm":
        cmd = [bnorm_bin, "--model", model, "--threads", str(threads), "--epochs", str(epochs),
               "--samples", str(samples), "--data", FASHION_DIR]
    else:
        python = KERAS_PYTHON if framework == "keras" else TORCH_PYTHON
        cmd = [python, os.path.abspath(__file__), "--worker", framework, "--model", model, "--threads",
               str(threads), "--epochs", str(epochs), "--samples", str(samples)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=thread_env(threads, omp_passive), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise RuntimeError(f"{framework} {model} threads={threads} failed (rc {proc.returncode}):\n{tail}")
    rec = json.loads(lines[-1])
    secs = rec["epoch_seconds"]
    rec["first_epoch_seconds"] = secs[0]
    rec["seconds_per_epoch"] = statistics.median(secs[1:]) if len(secs) > 1 else secs[0]
    rec["process_seconds"] = wall
    rec["load_average_before"] = load
    return rec


def combine(runs):
    """Repeats of one configuration: the run with the smallest median (least disturbed)."""
    best = dict(min(runs, key=lambda r: r["seconds_per_epoch"]))
    if len(runs) > 1:
        best["repeats"] = [{k: r[k] for k in ("seconds_per_epoch", "first_epoch_seconds", "load_average_before")}
                           for r in runs]
    return best


def fmt(v):
    if v is None:
        return "-"
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"


def print_table(results, threads_list, models):
    by = {(r["framework"], r["model"], r["threads"]): r for r in results}
    head = (f"{'model':<9} {'thr':>3} | {'bnorm':>9} {'Keras':>9} {'PyTorch':>9} | {'bnorm/Keras':>11} "
            f"{'bnorm/Torch':>11} | first epoch: {'bnorm':>9} {'Keras':>9} {'PyTorch':>9}")
    print("seconds per epoch (median of epochs 2..E); first epoch apart")
    print(head)
    print("-" * len(head))
    for model in models:
        for t in threads_list:
            b, k, p = (by.get((f, model, t)) for f in ("bnorm", "keras", "torch"))
            spe = [r["seconds_per_epoch"] if r else None for r in (b, k, p)]
            first = [r["first_epoch_seconds"] if r else None for r in (b, k, p)]
            rk = f"{spe[0] / spe[1]:.3g}x" if spe[0] and spe[1] else "-"
            rp = f"{spe[0] / spe[2]:.3g}x" if spe[0] and spe[2] else "-"
            print(f"{model:<9} {t:>3} | {fmt(spe[0]):>9} {fmt(spe[1]):>9} {fmt(spe[2]):>9} | {rk:>11} {rp:>11} | "
                  f"{'':13}{fmt(first[0]):>9} {fmt(first[1]):>9} {fmt(first[2]):>9}")




def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["keras", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--model", choices=list(MODELS), help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="2,1", help="comma-separated thread counts (default 2,1)")
    ap.add_argument("--models", default="dense64,mlp784", help="comma-separated models (default both)")
    ap.add_argument("--frameworks", default="bnorm,keras,torch")
    ap.add_argument("--epochs", type=int, default=0, help="epochs per run (default: dense64 20, mlp784 4)")
    ap.add_argument("--samples", type=int, default=12000, help="Fashion-MNIST images for mlp784 (default 12000)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every configuration R times (interleaved) and keep the fastest median (default 1)")
    ap.add_argument("--omp-passive", action="store_true",
                    help="set OMP_WAIT_POLICY=PASSIVE for every framework (helps on an oversubscribed machine)")
    ap.add_argument("--bnorm-bin", default=None, help="path to bnorm_train_bench")
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = ap.parse_args()

    if args.worker:
        args.threads = int(args.threads)
        rec = worker_keras(args) if args.worker == "keras" else worker_torch(args)
        print(json.dumps(rec))
        return

    threads_list = [int(t) for t in args.threads.split(",") if t]
    models = [m for m in args.models.split(",") if m]
    frameworks = [f for f in args.frameworks.split(",") if f]
    bnorm_bin = find_bnorm_bin(args.bnorm_bin) if "bnorm" in frameworks else None
    runs = {}
    start = time.perf_counter()
    for rep in range(args.repeat):
        for model in models:
            epochs = args.epochs or MODELS[model][1]
            for t in threads_list:
                for fw in frameworks:
                    rec = run_one(fw, model, t, epochs, args.samples, bnorm_bin, args.omp_passive)
                    print(f"  [{rep + 1}/{args.repeat}] {fw:<6} {model:<8} threads={t}: "
                          f"{fmt(rec['seconds_per_epoch'])}/epoch, first {fmt(rec['first_epoch_seconds'])} "
                          f"(process {rec['process_seconds']:.1f} s, load {rec['load_average_before']:.1f})",
                          file=sys.stderr, flush=True)
                    runs.setdefault((fw, model, t), []).append(rec)
    results = [combine(r) for r in runs.values()]
    versions = {}
    for r in results:
        versions.update(r.pop("versions", {}))
    commit = git_commit(ROOT)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_name(), "cores": os.cpu_count(), "load_average": os.getloadavg(),
            "python": platform.python_version(), "versions": versions, "repeat": args.repeat,
            "omp_wait_policy": "PASSIVE" if args.omp_passive else "default", "bnorm_commit": commit,
            "models": {m: MODELS[m][2] for m in models}, "total_seconds": round(time.perf_counter() - start, 1)}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(f"{meta['cpu']}, {meta['cores']} cores; "
          + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    print_table(results, threads_list, models)
    print(f"(total {meta['total_seconds']} s; results in {os.path.relpath(args.out)})")


if __name__ == "__main__":
    main()
