#!/usr/bin/env bash
# Tests of the `bnorm` command line tool: each case runs the built binary and checks its
# exit status, its output and the files it writes. CTest runs one case per test:
#
#   tests/apps/cli_test.sh BNORM_BINARY CASE
#
# Cases: help, experiment_report, unknown_option, unknown_command, missing_data_dir,
# bad_steps, bad_values, missing_files; and on the model `train_saves` writes to
# $BNORM_CLI_SHARED/model.keras (a CTest fixture: the cases after it need it):
# train_saves, inspect_model, predict_model, evaluate_model, bad_model_input.
# safety_*: outputs checked before any work, non-finite inputs, evaluate's test-set-only
# data folder, and stopping train / experiment with SIGINT and SIGTERM (issue 12).
# Error messages (msg_*): msg_unknown_command, msg_multi_input_model; on the model:
# msg_untrusted_bytes, msg_argument_names, msg_inspect_estimate, msg_stdout_full.
# recal_*: bnorm recalibrate (issue 17): recal_file (statistics against awk's population
# computation, per convention, through the written file; frozen layers), recal_errors, and
# on the model: recal_model (Fashion-MNIST default, accuracy before and after, idempotence).
# gap_*: bnorm inspect --data (issue 17): gap_file (report, JSON, figures, checks before any
# work) and gap_stale (a stale model's gap, near 0 after recalibrate on the same data).
# monitor_train: bnorm train --monitor DIR (issue 17): the gap every epoch in monitor.csv,
# monitor.png with gnuplot, the line naming them; an unwritable DIR refused before training.
# finetune_folder: bnorm train --finetune and bnorm evaluate on a class-folder dataset.
set -u

bnorm="$1"
case_name="$2"
data_dir=/usr/share/datasets/fashion-mnist
arrays="$(cd "$(dirname "$0")/../fixtures/arrays" && pwd)"  # .npy files written by NumPy
models="$(cd "$(dirname "$0")/../fixtures/models" && pwd)"  # model files written by Keras
shared="${BNORM_CLI_SHARED:-${TMPDIR:-/tmp}/bnorm_cli_shared}"
model="$shared/model.keras"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/bnorm_cli_test.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# run ARGS...: runs bnorm, leaving the status in $status, stdout in $tmp/out, stderr in $tmp/err.
run() {
  "$bnorm" "$@" >"$tmp/out" 2>"$tmp/err"
  status=$?
}

expect_status() {  # expect_status WANT DESCRIPTION
  if [ "$status" -ne "$1" ]; then
    fail "$2: exit status $status, expected $1"
    echo "--- stdout" >&2; tail -n 20 "$tmp/out" >&2
    echo "--- stderr" >&2; cat "$tmp/err" >&2
  fi
}

# A failing command: non-zero status, exactly one line on stderr, naming WORD.
expect_one_line_error() {  # expect_one_line_error WORD DESCRIPTION
  if [ "$status" -eq 0 ]; then fail "$2: exit status 0, expected non-zero"; fi
  local lines
  lines=$(wc -l <"$tmp/err")
  if [ "$lines" -ne 1 ]; then
    fail "$2: expected a one-line message on stderr, got $lines lines:"
    cat "$tmp/err" >&2
  fi
  if ! grep -qF -- "$1" "$tmp/err"; then
    fail "$2: the message does not name '$1': $(cat "$tmp/err")"
  fi
  echo "ok: $2 -> status $status: $(head -n 1 "$tmp/err")"
}

expect_contains() {  # expect_contains FILE TEXT DESCRIPTION
  if ! grep -qF -- "$2" "$1"; then fail "$3: '$2' not found in $(basename "$1")"; fi
}

require_dataset() {
  if [ ! -d "$data_dir" ]; then
    fail "the Fashion-MNIST dataset is missing at $data_dir: install the Debian package dataset-fashion-mnist (make deps / scripts/install-deps.sh does)"
    exit 1
  fi
}

require_model() {
  if [ ! -s "$model" ]; then
    fail "no model at $model: the train_saves case makes it (ctest runs it first as a fixture)"
    exit 1
  fi
}

# csv_shape FILE: "ROWSxCOLUMNS" of a CSV file (columns of its first line).
csv_shape() {
  echo "$(wc -l <"$1")x$(head -n 1 "$1" | awk -F, '{ print NF }')"
}

# rows_of_784 N FILE: N CSV rows of 784 pixel values in [0, 1].
rows_of_784() {
  awk -v n="$1" 'BEGIN { for (r = 0; r < n; r++) { line = ""; for (c = 0; c < 784; c++) line = line (c ? "," : "") ((r * 31 + c * 7) % 256) / 255; print line } }' >"$2"
}

# csv_close A B: two CSV files of numbers with the same shape whose values agree within
# 1e-6 + 1e-5 * |b| (float rounding), printing the first difference otherwise.
csv_close() {
  [ "$(csv_shape "$1")" = "$(csv_shape "$2")" ] || { echo "csv_close: shapes $(csv_shape "$1") and $(csv_shape "$2")" >&2; return 1; }
  paste -d'|' "$1" "$2" | awk -F'|' '{
    na = split($1, a, ","); split($2, b, ",")
    for (i = 1; i <= na; i++) {
      d = a[i] - b[i]; if (d < 0) d = -d
      m = b[i] < 0 ? -b[i] : b[i]
      if (d > 1e-6 + 1e-5 * m) { printf "csv_close: line %d, column %d: %s against %s\n", NR, i, a[i], b[i] > "/dev/stderr"; exit 1 }
    }
  }'
}

# start_bg ARGS...: bnorm in the background with SIGINT at its default action (a
# non-interactive shell starts background jobs with SIGINT ignored), output to
# $tmp/out and $tmp/err; its pid in $bg_pid.
start_bg() {
  rm -f "$tmp/out" "$tmp/err"  # (so that interrupt waits for this run's output)
  if env --default-signal=INT true 2>/dev/null; then
    env --default-signal=INT "$bnorm" "$@" >"$tmp/out" 2>"$tmp/err" &
  else
    python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
      "$bnorm" "$@" >"$tmp/out" 2>"$tmp/err" &
  fi
  bg_pid=$!
}
# interrupt SIGNAL TEXT DESCRIPTION: waits (60 s at most) for TEXT on stdout, sends
# SIGNAL, waits (30 s at most) for the exit; its status in $status.
interrupt() {
  local i
  for ((i = 0; i < 600; i++)); do
    grep -qF -- "$2" "$tmp/out" 2>/dev/null && break
    kill -0 "$bg_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "-$1" "$bg_pid" 2>/dev/null || fail "$3: the command ended before $1"
  for ((i = 0; i < 300; i++)); do
    kill -0 "$bg_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$bg_pid" 2>/dev/null; then
    fail "$3: still running 30 s after $1"
    kill -KILL "$bg_pid"
  fi
  wait "$bg_pid"
  status=$?
}
expect_interrupted() {  # expect_interrupted SIGNAL STATUS TEXT DESCRIPTION
  expect_status "$2" "$4"
  [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "$4: expected one line on stderr, got: $(cat "$tmp/err")"
  expect_contains "$tmp/err" "interrupted ($1) at step " "$4"
  expect_contains "$tmp/err" "$3" "$4"
  echo "ok: $4 -> status $status: $(head -n 1 "$tmp/err")"
}

is_png() {  # the 8-byte PNG signature
  [ -s "$1" ] && [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]
}

# bn_stats FILE: from `bnorm inspect --json` output in FILE, one line per batch-normalization
# layer: its name, then min, mean and max of moving_mean, moving_variance, gamma and beta
# ("-" for an absent one). Needs python3.
bn_stats() {
  python3 -c 'import json, sys
for l in json.load(open(sys.argv[1]))["batch_normalization_layers"]:
    print(l["name"], *(("%.17g" % l[k][s]) if l.get(k) else "-" for k in ("moving_mean", "moving_variance", "gamma", "beta") for s in ("min", "mean", "max")))' "$1"
}

# stats_close A B FIELDS TOLERANCE: the lines of files A and B agree in their first field
# and, in the numeric fields numbered FIELDS (e.g. "2-7"), within TOLERANCE relative.
stats_close() {
  [ "$(wc -l <"$1")" -eq "$(wc -l <"$2")" ] || { echo "stats_close: $(wc -l <"$1") and $(wc -l <"$2") lines" >&2; return 1; }
  paste -d'|' "$1" "$2" | awk -F'|' -v fields="$3" -v tol="$4" '{
    na = split($1, a, " "); split($2, b, " "); split(fields, f, "-")
    if (a[1] != b[1]) { printf "stats_close: line %d: %s against %s\n", NR, a[1], b[1] > "/dev/stderr"; exit 1 }
    for (i = f[1]; i <= f[2]; i++) {
      d = a[i] - b[i]; if (d < 0) d = -d
      m = b[i] < 0 ? -b[i] : b[i]
      if (d > tol * m + 1e-30) { printf "stats_close: %s field %d: %s against %s\n", a[1], i, a[i], b[i] > "/dev/stderr"; exit 1 }
    }
  }'
}

case "$case_name" in
  help)
    run --help
    expect_status 0 "bnorm --help"
    for sub in experiment train inspect predict evaluate recalibrate fold; do expect_contains "$tmp/out" "$sub" "bnorm --help lists $sub"; done
    run
    expect_status 0 "bnorm without a command prints the overview"
    expect_contains "$tmp/out" "experiment" "bnorm without a command"
    run experiment --help
    expect_status 0 "bnorm experiment --help"
    for opt in --steps --batch-size --learning-rate --eval-every --target-accuracy --seed --threads --out --data-dir; do
      expect_contains "$tmp/out" "$opt" "bnorm experiment --help"
    done
    run train --help
    expect_status 0 "bnorm train --help"
    for opt in --layers --activation --batch-norm --momentum --epsilon --optimizer --learning-rate --epochs --steps \
               --batch-size --seed --threads --init --data-dir --output; do
      expect_contains "$tmp/out" "$opt" "bnorm train --help"
    done
    expect_contains "$tmp/out" "Examples:" "bnorm train --help"
    run inspect --help
    expect_status 0 "bnorm inspect --help"
    for text in MODEL --json --memory-threshold "Examples:" "bnorm inspect model.keras"; do
      expect_contains "$tmp/out" "$text" "bnorm inspect --help"
    done
    run predict --help
    expect_status 0 "bnorm predict --help"
    for text in MODEL INPUT --output --batch-size "Examples:" "bnorm predict model.keras"; do
      expect_contains "$tmp/out" "$text" "bnorm predict --help"
    done
    run evaluate --help
    expect_status 0 "bnorm evaluate --help"
    for text in MODEL INPUT LABELS --loss --from-logits "Examples:" "bnorm evaluate model.keras"; do
      expect_contains "$tmp/out" "$text" "bnorm evaluate --help"
    done
    run recalibrate --help
    expect_status 0 "bnorm recalibrate --help"
    for text in MODEL --output --data --eval --no-eval --batch-size --skip-frozen --data-dir "Examples:" "bnorm recalibrate model.keras"; do
      expect_contains "$tmp/out" "$text" "bnorm recalibrate --help"
    done
    ;;

  experiment_report)
    require_dataset
    out="$tmp/report"
    run experiment --steps 200 --eval-every 100 --out "$out"
    expect_status 0 "bnorm experiment --steps 200"
    expect_contains "$tmp/out" "$out/summary.md" "bnorm experiment prints where the report is"
    for f in accuracy.csv percentiles.csv summary.md accuracy.gp percentiles.gp; do
      [ -s "$out/$f" ] || fail "report file $f missing or empty"
    done
    if [ -s "$out/accuracy.csv" ]; then
      # header, then steps 0, 100, 200
      [ "$(wc -l <"$out/accuracy.csv")" -eq 4 ] || fail "accuracy.csv: expected 4 lines, got $(wc -l <"$out/accuracy.csv")"
      [ "$(cut -d, -f1 "$out/accuracy.csv" | tr '\n' ' ')" = "step 0 100 200 " ] || fail "accuracy.csv steps: $(cut -d, -f1 "$out/accuracy.csv" | tr '\n' ' ')"
      # accuracies are fractions in [0, 1]
      awk -F, 'NR > 1 && ($2 < 0 || $2 > 1 || $3 < 0 || $3 > 1) { bad = 1 } END { exit bad }' "$out/accuracy.csv" ||
        fail "accuracy.csv holds an accuracy outside [0, 1]"
    fi
    expect_contains "$out/percentiles.csv" "step,plain_p15,plain_p50,plain_p85,batchnorm_p15,batchnorm_p50,batchnorm_p85" "percentiles.csv header"
    expect_contains "$out/summary.md" "test accuracy" "summary.md"
    # The summary's "width from A (step 100) to B (step 200)" are the widths at those
    # steps in percentiles.csv (not the run's minimum and maximum), for both networks.
    for col in 2 5; do  # plain_p15, batchnorm_p15 (p85 two columns on)
      want=$(awk -F, -v c="$col" '$1 == 100 { a = $(c + 2) - $c } $1 == 200 { b = $(c + 2) - $c } END { print a, b }' "$out/percentiles.csv")
      got=$(grep -o "width from [-0-9.]* (step 100) to [-0-9.]* (step 200)" "$out/summary.md" | sed -n "$(( col == 2 ? 1 : 2 ))p" | awk '{ print $3, $7 }')
      awk -v w="$want" -v g="$got" 'BEGIN { split(w, a, " "); split(g, b, " "); d1 = a[1] - b[1]; d2 = a[2] - b[2];
        exit !(g != "" && d1 < 0.011 && d1 > -0.011 && d2 < 0.011 && d2 > -0.011) }' ||
        fail "summary.md: the percentile width at steps 100 and 200 is '$got', percentiles.csv gives '$want'"
    done
    if command -v gnuplot >/dev/null 2>&1; then
      for png in accuracy.png percentiles.png; do
        is_png "$out/$png" || fail "$png missing or not a PNG file (gnuplot is installed)"
        expect_contains "$out/summary.md" "($png)" "summary.md embeds $png"
      done
    else
      echo "note: gnuplot is not installed; checking that the report says so instead of the PNGs"
      expect_contains "$out/summary.md" "Figures not drawn" "summary.md without gnuplot"
    fi
    ;;

  train_saves)
    require_dataset
    mkdir -p "$shared"
    rm -f "$model"
    run train --steps 30 --layers 32,16 --threads 1 --output "$model"
    expect_status 0 "bnorm train --steps 30 --output $model"
    expect_contains "$tmp/out" "test (inference mode" "bnorm train reports the test accuracy"
    expect_contains "$tmp/out" "saved the model to $model" "bnorm train says where the model is"
    expect_contains "$tmp/out" "bnorm inspect $model" "bnorm train hints at bnorm inspect"
    expect_contains "$tmp/out" "bnorm predict $model" "bnorm train hints at bnorm predict"
    [ -s "$model" ] || fail "bnorm train did not write $model"
    # A .keras file is a zip archive.
    [ "$(head -c 2 "$model" 2>/dev/null)" = "PK" ] || fail "$model is not a zip archive (.keras)"
    # A bad --output fails before any training.
    run train --steps 30 --output "$tmp/model.txt"
    expect_one_line_error "--output" "bnorm train --output model.txt"
    run train --steps 30 --output "$tmp/no/such/folder/m.keras"
    expect_one_line_error "$tmp/no/such/folder" "bnorm train --output into a missing folder"
    ;;

  inspect_model)
    require_model
    run inspect "$model"
    expect_status 0 "bnorm inspect MODEL"
    for text in batch_normalization_1 batch_normalization_2 "moving_mean min / mean / max" keras 0.9; do
      expect_contains "$tmp/out" "$text" "bnorm inspect lists the batch-normalization layers"
    done
    run inspect "$model" --json
    expect_status 0 "bnorm inspect MODEL --json"
    expect_contains "$tmp/out" '"format": "bnorm-inspect"' "bnorm inspect --json"
    expect_contains "$tmp/out" '"name": "batch_normalization_2"' "bnorm inspect --json"
    if command -v python3 >/dev/null 2>&1; then
      python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert len(d["batch_normalization_layers"]) == 2' "$tmp/out" ||
        fail "bnorm inspect --json: not JSON with two batch-normalization layers"
    fi
    ;;

  predict_model)
    require_model
    # .npy input (10 flattened images written by NumPy), CSV to standard output.
    run predict "$model" "$arrays/f4_10x784.npy"
    expect_status 0 "bnorm predict MODEL x.npy"
    [ "$(csv_shape "$tmp/out")" = "10x10" ] || fail "bnorm predict to stdout: expected 10 rows of 10, got $(csv_shape "$tmp/out")"
    # Softmax outputs: every row sums to 1.
    awk -F, '{ s = 0; for (i = 1; i <= NF; i++) s += $i; if (s < 0.999 || s > 1.001) bad = 1 } END { exit bad }' "$tmp/out" ||
      fail "bnorm predict: rows do not sum to 1"
    cp "$tmp/out" "$tmp/stdout.csv"
    # The same batches through -o y.csv: the same computation, so the same bits.
    run predict "$model" "$arrays/f4_10x784.npy" -o "$tmp/y.csv"
    expect_status 0 "bnorm predict -o y.csv"
    cmp -s "$tmp/y.csv" "$tmp/stdout.csv" || fail "bnorm predict: -o y.csv and stdout differ"
    expect_contains "$tmp/out" "wrote 10 rows of 10 outputs to $tmp/y.csv" "bnorm predict -o says what it wrote"
    # Another batch size: inference mode, so the same outputs up to the float rounding of
    # the matrix products, whose kernels OpenBLAS picks per CPU and per row count (they
    # differ in the last digits on some CPUs, as in Keras and PyTorch): compared within
    # 1e-6 + 1e-5 * |y|, never bitwise (docs/cli.md).
    run predict "$model" "$arrays/f4_10x784.npy" -o "$tmp/y3.csv" --batch-size 3
    expect_status 0 "bnorm predict -o y3.csv --batch-size 3"
    csv_close "$tmp/y3.csv" "$tmp/stdout.csv" || fail "bnorm predict: --batch-size 3 and the default batch size differ beyond float rounding"
    run predict "$model" "$arrays/f4_10x784.npy" -o "$tmp/y.npy"
    expect_status 0 "bnorm predict -o y.npy"
    [ "$(head -c 6 "$tmp/y.npy" | tail -c 5)" = "NUMPY" ] || fail "y.npy is not a .npy file"
    [ "$(wc -c <"$tmp/y.npy")" -eq 528 ] || fail "y.npy: expected 128 header + 400 data bytes, got $(wc -c <"$tmp/y.npy")"
    # CSV input with a header row.
    { printf 'p%d,' $(seq 1 783); echo p784; rows_of_784 3 /dev/stdout; } >"$tmp/x.csv"
    run predict "$model" "$tmp/x.csv"
    expect_status 0 "bnorm predict MODEL x.csv"
    [ "$(csv_shape "$tmp/out")" = "3x10" ] || fail "bnorm predict x.csv: expected 3 rows of 10, got $(csv_shape "$tmp/out")"
    ;;

  fold_model)
    # bnorm fold and predict --fold on CNNs written by Keras 3 and tf.keras: the folded
    # model's outputs within float rounding of the unfolded ones, the file reads back,
    # and what it says; bad use refused before any work.
    cnn="$(cd "$(dirname "$0")/../fixtures/cnn" && pwd)"
    for file in mobilenetv2_035.keras resnet_block_channels_first.h5 dense_block_channels_last.keras; do
      id="${file%.*}"
      ext="${file##*.}"
      run predict "$cnn/$file" "$cnn/$id/x.npy" -o "$tmp/plain.csv"
      expect_status 0 "bnorm predict $file"
      run predict "$cnn/$file" "$cnn/$id/x.npy" --fold -o "$tmp/fold.csv"
      expect_status 0 "bnorm predict --fold $file"
      csv_close "$tmp/fold.csv" "$tmp/plain.csv" || fail "bnorm predict --fold $file: outputs differ beyond float rounding"
      run fold "$cnn/$file" -o "$tmp/folded.$ext"
      expect_status 0 "bnorm fold $file"
      expect_contains "$tmp/out" "folded" "bnorm fold $file says how many it folded"
      run predict "$tmp/folded.$ext" "$cnn/$id/x.npy" -o "$tmp/file.csv"
      expect_status 0 "bnorm predict folded.$ext"
      csv_close "$tmp/file.csv" "$tmp/plain.csv" || fail "bnorm fold $file: the written model predicts differently"
    done
    run fold "$cnn/dense_block_channels_last.keras" -o "$tmp/f.keras"
    expect_contains "$tmp/out" "folded 1 batch-normalization layer into the layer before it, kept 3" "bnorm fold (pre-activation batch norms kept)"
    run fold "$cnn/mobilenetv2_035.keras" -o "$cnn/mobilenetv2_035.keras"
    expect_status 2 "bnorm fold -o MODEL"
    run fold "$cnn/mobilenetv2_035.keras" -o "$tmp/f.npy"
    expect_status 2 "bnorm fold -o f.npy"
    run fold "$tmp/nothere.keras" -o "$tmp/f2.keras"
    expect_status 1 "bnorm fold of a missing file"
    [ ! -e "$tmp/f2.keras" ] || fail "bnorm fold of a missing file wrote an output"
    ;;

  finetune_folder)
    # bnorm train --finetune on a class-folder dataset (issue 14): a Keras base model, the
    # guide's head, both phases, the model saved and evaluated on the folder; bad bases,
    # folders and options refused before training, naming the argument.
    images="$(cd "$(dirname "$0")/../fixtures/images" && pwd)"
    run train --finetune "$images/tiny_base.keras" --data-dir "$images/classes8" --epochs 3 --unfreeze-after 1 \
      --batch-size 4 -o "$tmp/tuned.keras"
    expect_status 0 "bnorm train --finetune"
    expect_contains "$tmp/out" "found 12 images belonging to 3 classes: bright, dark, striped" "bnorm train --finetune lists the classes"
    expect_contains "$tmp/out" "phase 1: base frozen" "bnorm train --finetune phase 1"
    expect_contains "$tmp/out" "phase 2: base unfrozen" "bnorm train --finetune phase 2"
    expect_contains "$tmp/out" "global_average_pooling2d (GlobalAveragePooling2D)" "bnorm train --finetune head"
    [ -s "$tmp/tuned.keras" ] || fail "bnorm train --finetune wrote no model"
    run evaluate "$tmp/tuned.keras" --data-dir "$images/classes8"
    expect_status 0 "bnorm evaluate on an image folder"
    expect_contains "$tmp/out" "12 samples, inference mode" "bnorm evaluate on an image folder"
    mkdir -p "$tmp/empty" "$tmp/one/a" "$tmp/broken/a" "$tmp/broken/b"
    cp "$images/classes8/dark/0.png" "$tmp/one/a/"
    cp "$images/classes8/dark/0.png" "$tmp/broken/a/"
    echo "not a png" >"$tmp/broken/b/x.png"
    run train --finetune "$images/tiny_base.keras" --data-dir "$tmp/empty" -o "$tmp/e.keras"
    expect_one_line_error "no subfolders" "bnorm train --finetune on an empty folder"
    run train --finetune "$images/tiny_base.keras" --data-dir "$tmp/one" -o "$tmp/e.keras"
    expect_one_line_error "at least 2 class folders" "bnorm train --finetune on one class"
    run train --finetune "$images/tiny_base.keras" --data-dir "$tmp/broken" -o "$tmp/e.keras"
    expect_one_line_error "b/x.png" "bnorm train --finetune with a broken image"
    run train --finetune "$models/bn_center_scale.keras" --data-dir "$images/classes8" -o "$tmp/e.keras"
    expect_one_line_error "image input (H, W, 3)" "bnorm train --finetune with a non-image base"
    run train --finetune "$images/tiny_base.keras" --data-dir "$images/classes8" --epochs 2 --unfreeze-after 2 -o "$tmp/e.keras"
    expect_one_line_error "--unfreeze-after" "bnorm train --unfreeze-after >= --epochs"
    expect_status 2 "bnorm train --unfreeze-after >= --epochs"
    run train --finetune "$images/tiny_base.keras" --layers 5 -o "$tmp/e.keras"
    expect_status 2 "bnorm train --finetune --layers"
    [ ! -e "$tmp/e.keras" ] || fail "a refused bnorm train --finetune wrote a model"
    run evaluate "$models/bn_center_scale.keras" --data-dir "$images/classes8"
    expect_one_line_error "image input (H, W, 3)" "bnorm evaluate of a non-image model on an image folder"
    ;;

  evaluate_model)
    require_model
    seq 0 9 >"$tmp/labels.csv"
    run evaluate "$model" "$arrays/f4_10x784.npy" "$tmp/labels.csv"
    expect_status 0 "bnorm evaluate MODEL x.npy labels.csv"
    expect_contains "$tmp/out" "10 samples, inference mode" "bnorm evaluate"
    expect_contains "$tmp/out" "sparse_categorical_crossentropy" "bnorm evaluate picks the sparse loss for class indices"
    expect_contains "$tmp/out" "accuracy" "bnorm evaluate reports accuracy"
    # One-hot labels: the categorical loss, and the same loss value.
    awk '{ line = ""; for (c = 0; c < 10; c++) line = line (c ? "," : "") (c == $1 ? 1 : 0); print line }' "$tmp/labels.csv" >"$tmp/onehot.csv"
    loss_sparse=$(awk '$1 == "loss" { print $3 }' "$tmp/out")
    run evaluate "$model" "$arrays/f4_10x784.npy" "$tmp/onehot.csv"
    expect_status 0 "bnorm evaluate with one-hot labels"
    expect_contains "$tmp/out" "categorical_crossentropy" "bnorm evaluate picks the categorical loss for one-hot labels"
    loss_onehot=$(awk '$1 == "loss" { print $3 }' "$tmp/out")
    [ -n "$loss_sparse" ] && [ "$loss_sparse" = "$loss_onehot" ] ||
      fail "sparse and one-hot losses differ: '$loss_sparse' vs '$loss_onehot'"
    # Without files: the Fashion-MNIST test set.
    if [ -d "$data_dir" ]; then
      run evaluate "$model"
      expect_status 0 "bnorm evaluate MODEL (Fashion-MNIST test set)"
      expect_contains "$tmp/out" "10000 samples" "bnorm evaluate on the test set"
    fi
    ;;

  missing_files)
    for sub in inspect predict evaluate; do
      extra=""
      [ "$sub" = inspect ] || extra="$arrays/f4_10x784.npy"
      [ "$sub" = evaluate ] && extra="$extra $arrays/plain_2x3.csv"
      # shellcheck disable=SC2086
      run "$sub" "$tmp/no-such-model.keras" $extra
      expect_one_line_error "$tmp/no-such-model.keras" "bnorm $sub with a missing model file"
      # A file that is not a model: text, and a .npy array named .keras.
      echo "not a model" >"$tmp/text.keras"
      # shellcheck disable=SC2086
      run "$sub" "$tmp/text.keras" $extra
      expect_one_line_error "$tmp/text.keras" "bnorm $sub with a text file as the model"
      cp "$arrays/f4_2x3.npy" "$tmp/array.h5"
      # shellcheck disable=SC2086
      run "$sub" "$tmp/array.h5" $extra
      expect_one_line_error "$tmp/array.h5" "bnorm $sub with a .npy file as the model"
      # shellcheck disable=SC2086
      run "$sub" "$tmp" $extra
      expect_one_line_error "$tmp" "bnorm $sub with a folder as the model"
    done
    run predict
    expect_one_line_error "MODEL" "bnorm predict without arguments"
    ;;

  bad_model_input)
    require_model
    # Wrong input width: names the expected and the received width.
    run predict "$model" "$arrays/plain_2x3.csv"
    expect_one_line_error "784 values" "bnorm predict with 3 columns"
    expect_one_line_error "rows of 3 values" "bnorm predict with 3 columns"
    run evaluate "$model" "$arrays/f4_2x3.npy" "$arrays/plain_2x3.csv"
    expect_one_line_error "784 values" "bnorm evaluate with 3 columns"
    # Missing and malformed input files.
    run predict "$model" "$tmp/nope.npy"
    expect_one_line_error "$tmp/nope.npy" "bnorm predict with a missing input"
    printf '1,2,3\n4,x,6\n' >"$tmp/bad.csv"
    run predict "$model" "$tmp/bad.csv"
    expect_one_line_error "line 2, column 2" "bnorm predict with a non-number in the CSV"
    run predict "$model" "$arrays/f4_big_endian.npy"
    expect_one_line_error "'>f4'" "bnorm predict with a big-endian .npy"
    # Labels: wrong count, out of range, wrong width; only INPUT given; unknown loss.
    seq 0 2 >"$tmp/three.csv"
    run evaluate "$model" "$arrays/f4_10x784.npy" "$tmp/three.csv"
    expect_one_line_error "10 rows" "bnorm evaluate with 3 labels for 10 samples"
    seq 1 10 >"$tmp/ten.csv"
    run evaluate "$model" "$arrays/f4_10x784.npy" "$tmp/ten.csv"
    expect_one_line_error "class index in [0, 10)" "bnorm evaluate with label 10"
    run evaluate "$model" "$arrays/f4_10x784.npy"
    expect_one_line_error "LABELS" "bnorm evaluate without LABELS"
    run evaluate "$model" "$arrays/f4_10x784.npy" "$tmp/three.csv" --loss hinge
    expect_one_line_error "--loss" "bnorm evaluate --loss hinge"
    # An output that cannot be written.
    run predict "$model" "$arrays/f4_10x784.npy" -o "$tmp/no/such/dir/y.npy"
    expect_one_line_error "$tmp/no/such/dir/y.npy" "bnorm predict -o into a missing folder"
    ;;

  unknown_option)
    run experiment --no-such-option
    expect_one_line_error "--no-such-option" "bnorm experiment --no-such-option"
    run train --no-such-option 3
    expect_one_line_error "--no-such-option" "bnorm train --no-such-option"
    for sub in inspect predict evaluate; do
      run "$sub" --no-such-option
      expect_one_line_error "--no-such-option" "bnorm $sub --no-such-option"
    done
    run inspect m.keras --memory-threshold 2
    expect_one_line_error "--memory-threshold" "bnorm inspect --memory-threshold 2"
    run predict m.keras x.npy --batch-size 0
    expect_one_line_error "--batch-size" "bnorm predict --batch-size 0"
    ;;

  unknown_command)
    run frobnicate
    expect_one_line_error "frobnicate" "bnorm frobnicate"
    ;;

  missing_data_dir)
    run experiment --data-dir /nonexistent/fashion-mnist --steps 10 --out "$tmp/report"
    expect_one_line_error "/nonexistent/fashion-mnist" "bnorm experiment --data-dir /nonexistent/fashion-mnist"
    [ ! -e "$tmp/report" ] || fail "a failed experiment must not leave a report folder"
    mkdir -p "$tmp/empty"
    run train --data-dir "$tmp/empty" --steps 10 -o "$tmp/m.keras"
    expect_one_line_error "train-images-idx3-ubyte" "bnorm train --data-dir EMPTY_DIR"
    ;;

  bad_steps)
    for v in 0 -5 abc 1.5; do
      run experiment --steps "$v"
      expect_one_line_error "--steps" "bnorm experiment --steps $v"
    done
    run experiment --steps=-5
    expect_one_line_error "--steps" "bnorm experiment --steps=-5"
    run train --steps 0
    expect_one_line_error "--steps" "bnorm train --steps 0"
    ;;

  bad_values)
    run experiment --eval-every 0
    expect_one_line_error "--eval-every" "bnorm experiment --eval-every 0"
    run experiment --learning-rate -1
    expect_one_line_error "--learning-rate" "bnorm experiment --learning-rate -1"
    run experiment --target-accuracy 1.5
    expect_one_line_error "--target-accuracy" "bnorm experiment --target-accuracy 1.5"
    run experiment --batch-size 70000
    expect_one_line_error "--batch-size" "bnorm experiment --batch-size 70000"
    run experiment --unit 100 --steps 1
    expect_one_line_error "--unit" "bnorm experiment --unit 100"
    run train --layers 100,x
    expect_one_line_error "--layers" "bnorm train --layers 100,x"
    run train --batch-norm maybe
    expect_one_line_error "--batch-norm" "bnorm train --batch-norm maybe"
    run train --optimizer adagrad
    expect_one_line_error "--optimizer" "bnorm train --optimizer adagrad"
    run train --momentum 1.5
    expect_one_line_error "--momentum" "bnorm train --momentum 1.5"
    run train --epochs 2 --steps 10
    expect_one_line_error "--steps" "bnorm train --epochs 2 --steps 10"
    ;;

  # --- issue 12: outputs checked before any work, non-finite inputs, interruption -------
  safety_output_is_input)
    require_model
    # -o naming an input (the same file, however spelled or linked) is refused before any
    # work, and the input is left as it was.
    cp "$model" "$tmp/m.keras"
    cp "$arrays/f4_10x784.npy" "$tmp/x.npy"
    ln -s x.npy "$tmp/symlink.npy"
    ln "$tmp/x.npy" "$tmp/hardlink.npy"
    for out in "$tmp/m.keras" "$tmp/x.npy" "$tmp/./x.npy" "$tmp/symlink.npy" "$tmp/hardlink.npy"; do
      run predict "$tmp/m.keras" "$tmp/x.npy" -o "$out"
      expect_status 2 "bnorm predict -o $out (an input)"
      expect_one_line_error "--output: expected a path other than the inputs, received '$out'" "bnorm predict -o $out"
    done
    expect_contains "$tmp/err" "(the INPUT file, '$tmp/x.npy')" "bnorm predict -o a link to INPUT names INPUT"
    run predict "$tmp/m.keras" "$tmp/x.npy" -o "$tmp/m.keras"
    expect_contains "$tmp/err" "(the MODEL file)" "bnorm predict -o MODEL names MODEL"
    cmp -s "$tmp/m.keras" "$model" || fail "bnorm predict -o MODEL changed the model file"
    cmp -s "$tmp/x.npy" "$arrays/f4_10x784.npy" || fail "bnorm predict -o INPUT changed the input file"
    # The experiment's report folder may not be the dataset folder.
    run experiment --steps 10 --data-dir "$tmp" --out "$tmp/."
    expect_status 2 "bnorm experiment --out DATA_DIR"
    expect_one_line_error "--out: expected a path other than the inputs" "bnorm experiment --out DATA_DIR"
    ;;

  safety_output_suffix)
    require_model
    # predict's output format is named by its suffix: .npy or .csv (any case), nothing else.
    for out in y.npz y.h5 y.txt y; do
      run predict "$model" "$arrays/f4_10x784.npy" -o "$tmp/$out"
      expect_status 2 "bnorm predict -o $out"
      expect_one_line_error "--output: expected a file name ending in .npy or .csv" "bnorm predict -o $out"
      [ ! -e "$tmp/$out" ] || fail "bnorm predict -o $out wrote $out"
    done
    run predict "$model" "$arrays/f4_10x784.npy" -o "$tmp/Y.NPY"
    expect_status 0 "bnorm predict -o Y.NPY"
    [ "$(head -c 6 "$tmp/Y.NPY" | tail -c 5)" = "NUMPY" ] || fail "Y.NPY is not a .npy file"
    ;;

  safety_unwritable_output)
    require_dataset
    require_model
    # Outputs that cannot be written are refused before training (no "Epoch" on stdout) or
    # before the model runs, with status 1.
    no_training() {  # no_training DESCRIPTION
      if grep -qE "Epoch|test accuracy:" "$tmp/out"; then fail "$1: trained before failing"; fi
    }
    # refused TEXT DESCRIPTION ARGS...: bnorm ARGS fails with status 1 and a one-line
    # message naming TEXT, before any training.
    refused() {
      local text="$1" what="$2"
      shift 2
      run "$@"
      expect_status 1 "$what"
      expect_one_line_error "$text" "$what"
      no_training "$what"
    }
    mkdir "$tmp/folder.keras" "$tmp/folder.npy"
    echo "a file" >"$tmp/afile"
    refused "received '$tmp/folder.keras', an existing folder" "bnorm train -o FOLDER" train --steps 30 --layers 16 --threads 1 -o "$tmp/folder.keras"
    refused "'$tmp/afile' is a file, not a folder" "bnorm train -o FILE/m.keras" train --steps 30 --layers 16 --threads 1 -o "$tmp/afile/m.keras"
    refused "--out" "bnorm experiment --out FILE" experiment --steps 20 --eval-every 10 --out "$tmp/afile"
    ln -s "$tmp/nowhere" "$tmp/dangling"
    refused "a symbolic link to a missing target" "bnorm experiment --out DANGLING_LINK" experiment --steps 20 --eval-every 10 --out "$tmp/dangling"
    run experiment --steps 20 --eval-every 10 --out ""
    expect_one_line_error "--out: expected a folder (created if missing), received an empty path" "bnorm experiment --out ''"
    run predict "$model" "$arrays/f4_10x784.npy" -o "$tmp/folder.npy"
    expect_status 1 "bnorm predict -o FOLDER"
    expect_one_line_error "received '$tmp/folder.npy', an existing folder" "bnorm predict -o FOLDER"
    # A read-only folder and file: chmod as a user; as root (who writes anywhere chmod
    # allows) the immutable attribute where the file system supports it.
    ro="$tmp/readonly" rofile="$tmp/readonly.keras"
    mkdir "$ro"
    echo "not writable" >"$rofile"
    if [ "$(id -u)" -ne 0 ]; then
      chmod a-w "$ro" "$rofile"
    elif ! chattr +i "$ro" "$rofile" 2>/dev/null; then
      echo "note: running as root without chattr +i here: skipping the read-only folder checks"
      ro=""
    fi
    if [ -n "$ro" ]; then
      trap 'chattr -i "$ro" "$rofile" 2>/dev/null; chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
      refused "--output: expected a path in a folder where files can be created" "bnorm train -o READ_ONLY_FOLDER/m.keras" train --steps 30 --layers 16 --threads 1 -o "$ro/m.keras"
      refused "--output: expected a file that can be written" "bnorm train -o READ_ONLY_FILE" train --steps 30 --layers 16 --threads 1 -o "$rofile"
      refused "--out: expected a folder where files can be created" "bnorm experiment --out READ_ONLY_FOLDER" experiment --steps 20 --eval-every 10 --out "$ro"
      run experiment --steps 20 --eval-every 10 --out "$ro/report"
      expect_status 1 "bnorm experiment --out READ_ONLY_FOLDER/report"
      no_training "bnorm experiment --out READ_ONLY_FOLDER/report"
      run predict "$model" "$arrays/f4_10x784.npy" -o "$ro/y.npy"
      expect_status 1 "bnorm predict -o READ_ONLY_FOLDER/y.npy"
      expect_one_line_error "'$ro/y.npy'" "bnorm predict -o READ_ONLY_FOLDER/y.npy"
      [ -z "$(ls -A "$ro")" ] || fail "the checks left files in $ro: $(ls -A "$ro")"
      chattr -i "$ro" "$rofile" 2>/dev/null
    fi
    ;;

  safety_nonfinite_input)
    require_model
    # x.npy with NaN at row 3, column 17: float32 after the 128-byte header.
    cp "$arrays/f4_10x784.npy" "$tmp/nan.npy"
    printf '\000\000\300\177' | dd of="$tmp/nan.npy" bs=1 seek=$((128 + 4 * (2 * 784 + 16))) conv=notrunc 2>/dev/null
    run predict "$model" "$tmp/nan.npy"
    expect_status 1 "bnorm predict with a NaN input"
    expect_one_line_error "INPUT $tmp/nan.npy: expected finite values, received nan at row 3, column 17" "bnorm predict with a NaN input"
    [ ! -s "$tmp/out" ] || fail "bnorm predict with a NaN input wrote outputs"
    rows_of_784 3 "$tmp/inf.csv"
    awk -F, -v OFS=, 'NR == 2 { $5 = "-inf" } { print }' "$tmp/inf.csv" >"$tmp/inf2.csv"
    run predict "$model" "$tmp/inf2.csv" -o "$tmp/y.csv"
    expect_status 1 "bnorm predict with -inf in a CSV"
    expect_one_line_error "received -inf at row 2, column 5" "bnorm predict with -inf in a CSV"
    [ ! -e "$tmp/y.csv" ] || fail "bnorm predict with -inf wrote y.csv"
    # --allow-nonfinite: the outputs, and one warning line with the count and first position.
    run predict "$model" "$tmp/nan.npy" --allow-nonfinite
    expect_status 0 "bnorm predict --allow-nonfinite"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "bnorm predict --allow-nonfinite: expected one warning line, got: $(cat "$tmp/err")"
    expect_contains "$tmp/err" "warning: INPUT $tmp/nan.npy: 1 non-finite value, the first nan at row 3, column 17" "bnorm predict --allow-nonfinite"
    [ "$(csv_shape "$tmp/out")" = "10x10" ] || fail "bnorm predict --allow-nonfinite: expected 10 rows of 10"
    # evaluate: INPUT and LABELS.
    seq 0 9 >"$tmp/labels.csv"
    run evaluate "$model" "$tmp/nan.npy" "$tmp/labels.csv"
    expect_status 1 "bnorm evaluate with a NaN input"
    expect_one_line_error "INPUT $tmp/nan.npy: expected finite values, received nan at row 3, column 17" "bnorm evaluate with a NaN input"
    awk '{ line = ""; for (c = 0; c < 10; c++) line = line (c ? "," : "") (c == $1 ? 1 : 0); print line }' "$tmp/labels.csv" |
      awk -F, -v OFS=, 'NR == 4 { $2 = "inf" } { print }' >"$tmp/onehot_inf.csv"
    run evaluate "$model" "$arrays/f4_10x784.npy" "$tmp/onehot_inf.csv"
    expect_status 1 "bnorm evaluate with inf in LABELS"
    expect_one_line_error "LABELS $tmp/onehot_inf.csv: expected finite values, received inf at row 4, column 2" "bnorm evaluate with inf in LABELS"
    run evaluate "$model" "$arrays/f4_10x784.npy" "$tmp/onehot_inf.csv" --allow-nonfinite
    expect_status 0 "bnorm evaluate --allow-nonfinite"
    expect_contains "$tmp/err" "warning: LABELS $tmp/onehot_inf.csv: 1 non-finite value" "bnorm evaluate --allow-nonfinite"
    ;;

  safety_evaluate_test_only)
    require_dataset
    require_model
    # evaluate reads only the test split: a folder with just the t10k files is enough.
    mkdir "$tmp/t10k" "$tmp/empty"
    for f in "$data_dir"/t10k-*; do ln -s "$f" "$tmp/t10k/"; done
    run evaluate "$model" --data-dir "$tmp/t10k"
    expect_status 0 "bnorm evaluate --data-dir (test files only)"
    expect_contains "$tmp/out" "10000 samples" "bnorm evaluate --data-dir (test files only)"
    run evaluate "$model" --data-dir "$tmp/empty"
    expect_one_line_error "t10k-images-idx3-ubyte" "bnorm evaluate --data-dir EMPTY_DIR"
    if grep -q "train-" "$tmp/err"; then fail "bnorm evaluate --data-dir EMPTY_DIR asks for training files: $(cat "$tmp/err")"; fi
    ;;

  safety_interrupt_train | safety_interrupt_experiment)
    require_dataset
    if [ "$case_name" = safety_interrupt_train ]; then
      # --steps (the step loop) and --epochs (fit, stopped by a callback).
      start_bg train --steps 1000000 --layers 16 --threads 1 -o "$tmp/m.keras"
      interrupt INT "Epoch 1/" "bnorm train --steps, SIGINT"
      expect_interrupted SIGINT 130 "of 1000000; the model was not saved to '$tmp/m.keras'" "bnorm train --steps, SIGINT"
      [ ! -e "$tmp/m.keras" ] || fail "bnorm train interrupted: $tmp/m.keras exists"
      # After its cleanup and its line, bnorm ends by the signal itself, so that a script
      # running it stops too (a shell goes on after a child that merely exits with 130):
      # the wait status says "killed by SIGINT" (signal 2), not "exited".
      ended_by=$(perl -e '
        my ($out, @cmd) = @ARGV;
        $SIG{INT} = "DEFAULT";
        my $pid = fork();
        if (!$pid) { open(STDOUT, ">", $out); open(STDERR, ">", "$out.err"); exec(@cmd); exit 127; }
        for (1 .. 1200) {
          select(undef, undef, undef, 0.1);
          open(my $f, "<", $out) or next;
          local $/;
          my $s = <$f> // "";
          last if $s =~ /Epoch 1\//;
        }
        kill("INT", $pid);
        waitpid($pid, 0);
        print $? & 127, "\n";' "$tmp/signal.out" "$bnorm" train --steps 1000000 --layers 16 --threads 1 -o "$tmp/m.keras")
      [ "$ended_by" = 2 ] || fail "bnorm train interrupted: expected to end by SIGINT (2), the wait status says '$ended_by'"
      expect_contains "$tmp/signal.out.err" "interrupted (SIGINT)" "bnorm train ended by SIGINT reports it first"
      start_bg train --epochs 1000 --layers 16 --threads 1 -o "$tmp/m.keras"
      interrupt TERM "Epoch 1/" "bnorm train --epochs, SIGTERM"
      expect_interrupted SIGTERM 143 "the model was not saved to '$tmp/m.keras'" "bnorm train --epochs, SIGTERM"
      [ ! -e "$tmp/m.keras" ] || fail "bnorm train interrupted: $tmp/m.keras exists"
    else
      # A report folder the run created is removed; one that existed stays, untouched.
      start_bg experiment --steps 1000000 --eval-every 1000 --threads 1 --out "$tmp/new/report"
      interrupt INT "test accuracy: without BN" "bnorm experiment --out NEW, SIGINT"
      expect_interrupted SIGINT 130 "no report was written to '$tmp/new/report'" "bnorm experiment --out NEW, SIGINT"
      [ ! -e "$tmp/new" ] || fail "bnorm experiment interrupted: the folder it created remains: $(find "$tmp/new")"
      mkdir "$tmp/old"
      echo "keep" >"$tmp/old/notes.txt"
      start_bg experiment --steps 1000000 --eval-every 1000 --threads 1 --out "$tmp/old"
      interrupt TERM "test accuracy: without BN" "bnorm experiment --out EXISTING, SIGTERM"
      expect_interrupted SIGTERM 143 "no report was written" "bnorm experiment --out EXISTING, SIGTERM"
      [ "$(ls -A "$tmp/old")" = "notes.txt" ] || fail "bnorm experiment interrupted: $tmp/old holds $(ls -A "$tmp/old")"
    fi
    ;;

  # --- error messages (issue 12): one line, one style, bytes from files escaped --------
  msg_untrusted_bytes)
    require_model
    # A CSV field with an escape sequence (red text) and a NUL: escaped, and the text
    # after the NUL still in the message.
    printf '1,2,3\n4,\033[31mred\000after,6\n' >"$tmp/esc.csv"
    run predict "$model" "$tmp/esc.csv"
    expect_one_line_error 'received '"'"'\x1b[31mred\x00after'"'" "bnorm predict with ESC and NUL in a CSV field"
    # A .npy header with control bytes (a NUL, "clear screen", a bell) in a key.
    { printf '\223NUMPY\001\000\166\000'
      printf "{'descr': '<f4', 'fortran_order': False, '\000\033[2J\007': (1,), }"
      printf '%*s\n' 59 ''; } >"$tmp/ctl.npy"
    run predict "$model" "$tmp/ctl.npy"
    expect_one_line_error "'\\x00\\x1b[2J\\x07': (1,), }'" "bnorm predict with control bytes in a .npy header"
    # A long field is cut, with its length.
    { printf '1,'; printf 'z%.0s' $(seq 1 300); echo; } >"$tmp/long.csv"
    run predict "$model" "$tmp/long.csv"
    expect_one_line_error "zzz...' (300 bytes)" "bnorm predict with a 300-character field"
    for f in esc.csv ctl.npy; do
      run predict "$model" "$tmp/$f"
      if LC_ALL=C grep -q '[^ -~]' "$tmp/err" || [ "$(tr -d '\n' <"$tmp/err" | LC_ALL=C tr -d ' -~' | wc -c)" -ne 0 ]; then
        fail "bnorm predict $f: the message holds bytes that are not printable ASCII: $(od -c "$tmp/err" | head -n 5)"
      fi
    done
    ;;

  msg_argument_names)
    require_model
    # Reader errors name the argument and the file, in the one style of the tool; no
    # reader function names, no doubled "expected", singular for one.
    printf '1,2,3\n4,5\n' >"$tmp/ragged.csv"
    run predict "$model" "$tmp/ragged.csv"
    expect_one_line_error "bnorm predict: error: INPUT $tmp/ragged.csv: line 2: expected 3 fields (as line 1), received 2" \
      "bnorm predict with a ragged CSV"
    seq 1 2 >"$tmp/one_column.csv"
    run predict "$model" "$tmp/one_column.csv"
    expect_one_line_error "INPUT $tmp/one_column.csv: expected rows of 784 values (the model's input shape (784,)), received rows of 1 value (file shape (2, 1))" \
      "bnorm predict with one column"
    run predict "$model" "$arrays/f4_big_endian.npy"
    expect_one_line_error "bnorm predict: error: INPUT $arrays/f4_big_endian.npy: header 'descr': expected dtype float32" \
      "bnorm predict with a big-endian .npy"
    printf '1,2,3\n4,x,6\n' >"$tmp/bad.csv"
    run evaluate "$model" "$tmp/bad.csv" "$arrays/plain_2x3.csv"
    expect_one_line_error "bnorm evaluate: error: INPUT $tmp/bad.csv: line 2, column 2: expected a number, received 'x'" \
      "bnorm evaluate with a non-number in INPUT"
    run inspect "$models/unsupported_conv3d.keras"
    expect_one_line_error "bnorm inspect: error: MODEL $models/unsupported_conv3d.keras: layer 'conv' (Conv3D): expected a layer class bnorm supports" \
      "bnorm inspect with a Conv3D layer"
    for sub in predict inspect; do
      extra=""
      [ "$sub" = predict ] && extra="$tmp/ragged.csv"
      # shellcheck disable=SC2086
      run "$sub" "$models/unsupported_conv3d.keras" $extra
      for word in read_npy read_csv read_idx load_model load_mnist_layout "expected line"; do
        if grep -qF -- "$word" "$tmp/err"; then fail "bnorm $sub: the message says '$word': $(cat "$tmp/err")"; fi
      done
    done
    ;;

  msg_unknown_command)
    run bogus
    expect_status 2 "bnorm bogus"
    expect_one_line_error "bnorm: error: unknown command 'bogus' (commands: experiment, train, inspect, predict, evaluate, recalibrate, fold; see \`bnorm --help\`)" \
      "bnorm bogus"
    run tarin --steps 3
    expect_status 2 "bnorm tarin"
    expect_one_line_error "unknown command 'tarin' (did you mean 'train'?" "bnorm tarin"
    run --version
    expect_status 0 "bnorm --version"
    version=$(sed -n 's/^project(bnorm VERSION \([0-9.]*\).*/\1/p' "$(dirname "$0")/../../CMakeLists.txt")
    [ -n "$version" ] && [ "$(cat "$tmp/out")" = "bnorm $version" ] ||
      fail "bnorm --version: expected 'bnorm $version', got '$(cat "$tmp/out")'"
    ;;

  msg_multi_input_model)
    # A functional model with an Add layer (two inputs): functional.keras, written by
    # Keras, with an Add inserted into its config.json: a graph, which loads. The same
    # with the Add reading a layer that does not exist: refused in one line naming it,
    # without the raw JSON of its inbound nodes.
    if ! command -v python3 >/dev/null 2>&1; then
      echo "note: python3 is not installed; skipping the edited .keras file"
    else
      python3 - "$models/functional.keras" "$tmp/add.keras" <<'PY' || fail "could not write add.keras"
import json, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as z:
    members = {n: z.read(n) for n in z.namelist()}
config = json.loads(members["config.json"])
layers = config["config"]["layers"]
bn = next(l for l in layers if l["class_name"] == "BatchNormalization")
dense_1 = next(l for l in layers if l["config"]["name"] == "dense_1")
def tensor(name, width):
    return {"class_name": "__keras_tensor__", "config": {"shape": [None, width], "dtype": "float32", "keras_history": [name, 0, 0]}}
add = {"module": "keras.layers", "class_name": "Add", "config": {"name": "add", "trainable": True, "dtype": "float32"},
       "registered_name": None, "name": "add",
       "inbound_nodes": [{"args": [[tensor("dense", 8), tensor("batch_normalization", 8)]], "kwargs": {}}]}
layers.insert(layers.index(dense_1), add)
dense_1["inbound_nodes"] = [{"args": [tensor("add", 8)], "kwargs": {}}]
def write(path):
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
write(dst)
add["inbound_nodes"] = [{"args": [[tensor("dense", 8), tensor("nothere", 8)]], "kwargs": {}}]
write(dst.replace("add.keras", "dangling.keras"))
PY
      run inspect "$tmp/add.keras"
      expect_status 0 "bnorm inspect add.keras (a graph with an Add)"
      run inspect "$tmp/dangling.keras"
      expect_status 1 "bnorm inspect dangling.keras"
      expect_one_line_error "bnorm inspect: error: MODEL $tmp/dangling.keras: Functional config: expected a layer named 'nothere', received none" \
        "bnorm inspect with an Add reading a missing layer"
      if grep -qF "keras_history" "$tmp/err" || [ "$(wc -c <"$tmp/err")" -gt 300 ]; then
        fail "bnorm inspect add.keras: the message dumps the file's JSON: $(cat "$tmp/err")"
      fi
    fi
    ;;

  msg_inspect_estimate)
    require_model
    # The update count from the optimizer's iterations is an estimate, not a bound: a
    # recompiled model restarts the count.
    run inspect "$model"
    expect_status 0 "bnorm inspect MODEL"
    expect_contains "$tmp/out" "estimated from the optimizer's 30 iterations; recompiling resets that count" "bnorm inspect"
    expect_contains "$tmp/out" "may have had more updates" "bnorm inspect"
    run inspect "$model" --json
    expect_status 0 "bnorm inspect MODEL --json"
    expect_contains "$tmp/out" '"updates_source": "estimated from optimizer iterations"' "bnorm inspect --json"
    expect_contains "$tmp/out" '"optimizer_iterations": 30' "bnorm inspect --json"
    run inspect "$model"
    cat "$tmp/out" >"$tmp/both"
    run inspect "$model" --json
    cat "$tmp/out" >>"$tmp/both"
    if grep -qi "upper bound" "$tmp/both"; then fail "bnorm inspect still calls the estimate an upper bound"; fi
    ;;

  msg_stdout_full)
    require_model
    # A failed write to standard output (here a full disk) is an error, exit status 1,
    # for every command: one line naming standard output.
    if [ ! -w /dev/full ]; then
      echo "note: no /dev/full here; skipping"
    else
      seq 0 9 >"$tmp/labels.csv"
      full() {  # full DESCRIPTION ARGS...: runs bnorm with stdout on /dev/full
        local what="$1"
        shift
        "$bnorm" "$@" >/dev/full 2>"$tmp/err"
        status=$?
        expect_status 1 "$what > /dev/full"
        expect_one_line_error "standard output" "$what > /dev/full"
      }
      full "bnorm inspect" inspect "$model"
      expect_contains "$tmp/err" "bnorm inspect: error: standard output: expected a writable stream, received a write error (No space left on device)" "bnorm inspect > /dev/full"
      full "bnorm inspect --json" inspect "$model" --json
      full "bnorm evaluate" evaluate "$model" "$arrays/f4_10x784.npy" "$tmp/labels.csv"
      full "bnorm predict" predict "$model" "$arrays/f4_10x784.npy"
      full "bnorm train --help" train --help
      expect_contains "$tmp/err" "bnorm train: error: standard output" "bnorm train --help > /dev/full"
      full "bnorm --help" --help
      full "bnorm --version" --version
    fi
    ;;

  # LABELS and --data-dir errors name the argument that gave the file, and a count of one
  # is singular.
  msg_labels_data_dir)
    require_model
    printf '1\n2,3\n' >"$tmp/labels.csv"
    run evaluate "$model" "$arrays/f4_10x784.npy" "$tmp/labels.csv"
    expect_one_line_error "bnorm evaluate: error: LABELS $tmp/labels.csv: line 2: expected 1 field (as line 1), received 2" \
      "bnorm evaluate with ragged LABELS"
    mkdir -p "$tmp/empty"
    run train --data-dir "$tmp/empty" --steps 10 -o "$tmp/m.keras"
    expect_one_line_error "bnorm train: error: --data-dir $tmp/empty: train-images-idx3-ubyte.gz: expected an IDX file" \
      "bnorm train --data-dir EMPTY_DIR"
    seq 0 9 | sed 's/$/,0/' >"$tmp/two.csv"
    run evaluate "$model" "$arrays/f4_10x784.npy" "$tmp/two.csv"
    expect_one_line_error "received rows of 2 values" "bnorm evaluate with two-column class labels"
    seq 0 9 >"$tmp/labels1.csv"
    run evaluate "$model" "$arrays/f4_10x784.npy" "$tmp/labels1.csv" --loss categorical_crossentropy
    expect_one_line_error "received rows of 1 value" "bnorm evaluate with one value per row for one-hot labels"
    run evaluate "$model" --data-dir "$tmp/empty"
    expect_one_line_error "bnorm evaluate: error: --data-dir $tmp/empty: t10k-images-idx3-ubyte.gz: expected an IDX file" \
      "bnorm evaluate --data-dir EMPTY_DIR"
    # A folder name that is not ASCII: escaped, and still no loader name in the message.
    mkdir -p "$tmp/donn$(printf '\303\251')es"
    run evaluate "$model" --data-dir "$tmp/donn$(printf '\303\251')es"
    expect_one_line_error "bnorm evaluate: error: --data-dir $tmp/donn\\xc3\\xa9es: t10k-images-idx3-ubyte.gz: expected an IDX file" \
      "bnorm evaluate --data-dir NON_ASCII_DIR"
    if grep -q "load_mnist" "$tmp/err"; then fail "bnorm evaluate --data-dir NON_ASCII_DIR names the loader: $(cat "$tmp/err")"; fi
    ;;

  # --- bnorm recalibrate: population statistics (issue 17) --------------------------------
  # A model whose first layer is its batch normalization, written by Keras (input (3, 4, 4),
  # axis 1): recalibrated on a CSV file, its moving statistics are the population mean and
  # variance of the file's channels, computed here by awk in double, and the written file
  # loads back (bnorm inspect) with them. Keras 3 (.keras) stores the biased variance; the
  # tf.keras file (.legacy.h5: Keras 2, fused for rank 4) the unbiased N/(N-1) one.
  recal_file)
    if ! command -v python3 >/dev/null 2>&1; then
      echo "note: python3 is not installed; skipping (bnorm inspect --json is read with it)"
      exit 0
    fi
    # 203 rows of 3 channels x 16 positions: 1000 + 5 c + (c + 1) k / 64, exact in float.
    awk 'BEGIN { for (r = 0; r < 203; r++) { line = ""; for (c = 0; c < 3; c++) for (s = 0; s < 16; s++) {
           k = (r * 37 + s * 11 + c * r * 7) % 129 - 64
           line = line ((c || s) ? "," : "") sprintf("%.6f", 1000 + 5 * c + (c + 1) * k / 64) }
         print line } }' >"$tmp/x.csv"
    # want.txt: per convention, "bn" then min, mean, max of the channel means and variances.
    awk -F, -v dir="$tmp" '{ for (c = 0; c < 3; c++) for (s = 0; s < 16; s++) { v[NR, c, s] = $(c * 16 + s + 1); sum[c] += v[NR, c, s] } }
      END {
        n = NR * 16
        for (c = 0; c < 3; c++) { mean[c] = sum[c] / n; m2[c] = 0
          for (r = 1; r <= NR; r++) for (s = 0; s < 16; s++) { d = v[r, c, s] - mean[c]; m2[c] += d * d } }
        for (u = 0; u < 2; u++) {
          line = "bn"
          for (q = 0; q < 2; q++) {
            lo = 1e300; hi = -1e300; avg = 0
            for (c = 0; c < 3; c++) { x = q == 0 ? mean[c] : m2[c] / (u ? n - 1 : n); lo = x < lo ? x : lo; hi = x > hi ? x : hi; avg += x / 3 }
            line = line sprintf(" %.17g %.17g %.17g", lo, avg, hi)
          }
          print line > (dir (u ? "/want_unbiased.txt" : "/want_biased.txt"))
        } }' "$tmp/x.csv"
    for variant in keras:biased legacy.h5:unbiased; do
      suffix=${variant%%:*}
      kind=${variant##*:}
      out="$tmp/r_$kind.${suffix##*.}"
      run recalibrate "$models/bn_nchw.$suffix" --data "$tmp/x.csv" --batch-size 17 -o "$out"
      expect_status 0 "bnorm recalibrate bn_nchw.$suffix --data x.csv"
      expect_contains "$tmp/out" "recalibrating 1 batch-normalization layer on $tmp/x.csv: 203 samples, batches of 17" "bnorm recalibrate --data"
      expect_contains "$tmp/out" "saved the recalibrated model to $out" "bnorm recalibrate says where the model is"
      [ "$(awk '$1 == "bn" { print $3 }' "$tmp/out")" = "3248" ] || fail "bnorm recalibrate: count of bn is not 203 x 16 = 3248"
      if grep -q "accuracy" "$tmp/out"; then fail "bnorm recalibrate --data without --eval reported an accuracy"; fi
      run inspect "$out" --json
      expect_status 0 "bnorm inspect the recalibrated $out"
      bn_stats "$tmp/out" >"$tmp/got.txt"
      cut -d' ' -f1-7 "$tmp/got.txt" >"$tmp/got_stats.txt"
      stats_close "$tmp/got_stats.txt" "$tmp/want_$kind.txt" 2-7 1e-6 ||
        fail "bnorm recalibrate bn_nchw.$suffix: moving statistics of $out differ from the population's ($kind variance): $(cat "$tmp/got_stats.txt") against $(cat "$tmp/want_$kind.txt")"
      # gamma and beta unchanged.
      run inspect "$models/bn_nchw.$suffix" --json
      bn_stats "$tmp/out" | cut -d' ' -f1,8- >"$tmp/before_affine.txt"
      cut -d' ' -f1,8- "$tmp/got.txt" >"$tmp/after_affine.txt"
      cmp -s "$tmp/before_affine.txt" "$tmp/after_affine.txt" || fail "bnorm recalibrate changed gamma or beta of bn_nchw.$suffix"
    done
    # A frozen layer (frozen_bn.keras: input 8, Dense 12, frozen BatchNormalization) is
    # recalibrated, unless --skip-frozen.
    awk 'BEGIN { for (r = 0; r < 50; r++) { line = ""; for (c = 0; c < 8; c++) line = line (c ? "," : "") sprintf("%.4f", (r * 13 + c * 5) % 17 / 4 - 2); print line } }' >"$tmp/x8.csv"
    run inspect "$models/frozen_bn.keras" --json
    bn_stats "$tmp/out" >"$tmp/frozen_before.txt"
    run recalibrate "$models/frozen_bn.keras" --data "$tmp/x8.csv" --skip-frozen -o "$tmp/kept.keras"
    expect_status 0 "bnorm recalibrate --skip-frozen"
    expect_contains "$tmp/out" "frozen: statistics kept (--skip-frozen)" "bnorm recalibrate --skip-frozen"
    run inspect "$tmp/kept.keras" --json
    bn_stats "$tmp/out" >"$tmp/frozen_kept.txt"
    cmp -s "$tmp/frozen_before.txt" "$tmp/frozen_kept.txt" || fail "bnorm recalibrate --skip-frozen changed the frozen layer's statistics"
    run recalibrate "$models/frozen_bn.keras" --data "$tmp/x8.csv" -o "$tmp/all.keras"
    expect_status 0 "bnorm recalibrate a frozen layer"
    run inspect "$tmp/all.keras" --json
    bn_stats "$tmp/out" >"$tmp/frozen_all.txt"
    if cmp -s "$tmp/frozen_before.txt" "$tmp/frozen_all.txt"; then fail "bnorm recalibrate left the frozen layer's statistics (the default recalibrates it)"; fi
    ;;

  # On the model of train_saves: the Fashion-MNIST default (training images, accuracy on
  # the test set before and after, which bnorm evaluate confirms), idempotence, --eval.
  recal_model)
    require_dataset
    require_model
    if ! command -v python3 >/dev/null 2>&1; then echo "note: python3 is not installed; skipping the JSON checks"; fi
    run recalibrate "$model" -o "$tmp/r.keras" --batch-size 1000
    expect_status 0 "bnorm recalibrate MODEL"
    expect_contains "$tmp/out" "recalibrating 2 batch-normalization layers on the Fashion-MNIST training set ($data_dir): 60000 samples, batches of 1000" "bnorm recalibrate"
    expect_contains "$tmp/out" "accuracy on the Fashion-MNIST test set (10000 samples, inference mode): before " "bnorm recalibrate"
    for layer in batch_normalization_1 batch_normalization_2; do
      [ "$(awk -v l="$layer" '$1 == l { print $3 }' "$tmp/out")" = "60000" ] || fail "bnorm recalibrate: $layer count is not 60000"
    done
    before=$(sed -n 's/.*: before \([0-9.]*\), after .*/\1/p' "$tmp/out")
    after=$(sed -n 's/.*, after \([0-9.]*\) (.*/\1/p' "$tmp/out")
    run evaluate "$model"
    [ -n "$before" ] && [ "$(awk '$1 == "accuracy" { print $NF }' "$tmp/out")" = "$before" ] ||
      fail "bnorm recalibrate: accuracy before '$before' is not bnorm evaluate's on MODEL: $(awk '$1 == "accuracy"' "$tmp/out")"
    run evaluate "$tmp/r.keras"
    expect_status 0 "bnorm evaluate the recalibrated model"
    [ -n "$after" ] && [ "$(awk '$1 == "accuracy" { print $NF }' "$tmp/out")" = "$after" ] ||
      fail "bnorm recalibrate: accuracy after '$after' is not bnorm evaluate's on the written model: $(awk '$1 == "accuracy"' "$tmp/out")"
    # Again on the recalibrated model: nothing moves (shifts 0, std ratios 1).
    run recalibrate "$tmp/r.keras" --no-eval -o "$tmp/r2.keras" --batch-size 777
    expect_status 0 "bnorm recalibrate the recalibrated model"
    awk '$1 ~ /^batch_normalization/ && ($4 > 1e-4 || $5 > 1e-4 || $6 < 0.9999 || $6 > 1.0001 || $7 < 0.9999 || $7 > 1.0001) { bad = 1 } END { exit bad }' "$tmp/out" ||
      fail "bnorm recalibrate twice: the second run moved the statistics: $(cat "$tmp/out")"
    if grep -q "accuracy" "$tmp/out"; then fail "bnorm recalibrate --no-eval reported an accuracy"; fi
    if command -v python3 >/dev/null 2>&1; then
      for f in "$model" "$tmp/r.keras" "$tmp/r2.keras"; do
        run inspect "$f" --json
        bn_stats "$tmp/out" >"$tmp/$(basename "$f").stats"
      done
      stats_close "$tmp/r2.keras.stats" "$tmp/r.keras.stats" 2-13 1e-6 || fail "bnorm recalibrate twice: the statistics differ beyond 1e-6"
      if cmp -s "$tmp/model.keras.stats" "$tmp/r.keras.stats"; then fail "bnorm recalibrate: the written model has the old statistics"; fi
      cut -d' ' -f1,8- "$tmp/model.keras.stats" >"$tmp/a.txt"
      cut -d' ' -f1,8- "$tmp/r.keras.stats" >"$tmp/b.txt"
      cmp -s "$tmp/a.txt" "$tmp/b.txt" || fail "bnorm recalibrate changed gamma or beta"
    fi
    # Files: --data and --eval (10 images, labels 0..9), written as legacy .h5.
    seq 0 9 >"$tmp/labels.csv"
    run recalibrate "$model" --data "$arrays/f4_10x784.npy" --eval "$arrays/f4_10x784.npy" "$tmp/labels.csv" -o "$tmp/r.h5"
    expect_status 0 "bnorm recalibrate --data --eval -o r.h5"
    expect_contains "$tmp/out" "recalibrating 2 batch-normalization layers on $arrays/f4_10x784.npy: 10 samples" "bnorm recalibrate --data"
    expect_contains "$tmp/out" "accuracy on $arrays/f4_10x784.npy (10 samples, inference mode): before " "bnorm recalibrate --eval"
    [ "$(head -c 4 "$tmp/r.h5" | od -An -tx1 | tr -d ' \n')" = "89484446" ] || fail "r.h5 is not an HDF5 file"
    run predict "$tmp/r.h5" "$arrays/f4_10x784.npy"
    expect_status 0 "bnorm predict with the recalibrated .h5 model"
    ;;

  recal_errors)
    require_dataset
    # The output is checked before any work; inputs as for predict and evaluate.
    run recalibrate "$models/mlp.keras" -o "$models/mlp.keras"
    expect_status 2 "bnorm recalibrate -o MODEL"
    expect_one_line_error "--output: expected a path other than the inputs, received '$models/mlp.keras' (the MODEL file)" "bnorm recalibrate -o MODEL"
    run recalibrate "$models/mlp.keras" --data "$tmp/x.csv" -o "$tmp/./x.csv"
    expect_status 2 "bnorm recalibrate -o --data"
    expect_one_line_error "(the --data file" "bnorm recalibrate -o --data"
    for out in m.weights.h5 m.npy m; do
      run recalibrate "$models/mlp.keras" -o "$tmp/$out"
      expect_status 2 "bnorm recalibrate -o $out"
      expect_one_line_error "--output: expected a model file name ending in .keras (or .h5 for legacy tf.keras)" "bnorm recalibrate -o $out"
    done
    run recalibrate "$models/mlp.keras"
    expect_status 2 "bnorm recalibrate without -o"
    expect_one_line_error "--output is required" "bnorm recalibrate without -o"
    run recalibrate "$models/mlp.keras" -o "$tmp/no/such/folder/r.keras"
    expect_status 1 "bnorm recalibrate -o into a missing folder"
    expect_one_line_error "$tmp/no/such/folder" "bnorm recalibrate -o into a missing folder"
    run recalibrate "$models/mlp.keras" --batch-size 0 -o "$tmp/r.keras"
    expect_one_line_error "--batch-size" "bnorm recalibrate --batch-size 0"
    run recalibrate "$models/mlp.keras" --eval "$arrays/f4_10x784.npy" -o "$tmp/r.keras"
    expect_status 2 "bnorm recalibrate --eval with one file"
    expect_one_line_error "--eval" "bnorm recalibrate --eval with one file"
    run recalibrate "$models/mlp.keras" --eval a.npy b.npy --no-eval -o "$tmp/r.keras"
    expect_status 2 "bnorm recalibrate --eval --no-eval"
    expect_one_line_error "--no-eval" "bnorm recalibrate --eval --no-eval"
    run recalibrate "$tmp/nothere.keras" -o "$tmp/r.keras"
    expect_status 1 "bnorm recalibrate with a missing model"
    expect_one_line_error "MODEL $tmp/nothere.keras: expected a model file" "bnorm recalibrate with a missing model"
    # mlp.keras takes 10 inputs: the Fashion-MNIST default does not fit, nor a 784-wide file.
    run recalibrate "$models/mlp.keras" -o "$tmp/r.keras"
    expect_status 1 "bnorm recalibrate a 10-input model on Fashion-MNIST"
    expect_one_line_error "a model of 784 inputs for Fashion-MNIST" "bnorm recalibrate a 10-input model on Fashion-MNIST"
    run recalibrate "$models/mlp.keras" --data "$arrays/f4_10x784.npy" -o "$tmp/r.keras"
    expect_status 1 "bnorm recalibrate with --data of the wrong width"
    expect_one_line_error "--data $arrays/f4_10x784.npy: expected rows of 10 values" "bnorm recalibrate with --data of the wrong width"
    # Non-finite samples and labels are refused, naming the place.
    printf '1,2,3,4,5,6,7,8,9,10\n1,2,3,4,nan,6,7,8,9,10\n' >"$tmp/nan.csv"
    run recalibrate "$models/mlp.keras" --data "$tmp/nan.csv" -o "$tmp/r.keras"
    expect_status 1 "bnorm recalibrate with NaN in --data"
    expect_one_line_error "--data $tmp/nan.csv: expected finite values, received nan at row 2, column 5" "bnorm recalibrate with NaN in --data"
    printf '1,2,3,4,5,6,7,8,9,10\n' >"$tmp/x10.csv"
    printf '0\n' >"$tmp/one.csv"
    printf '0\n1\n' >"$tmp/two.csv"
    run recalibrate "$models/mlp.keras" --data "$tmp/x10.csv" --eval "$tmp/x10.csv" "$tmp/two.csv" -o "$tmp/r.keras"
    expect_status 1 "bnorm recalibrate with 2 labels for 1 sample"
    expect_one_line_error "--eval LABELS $tmp/two.csv: expected 1 row (one per evaluation sample), received 2 rows" "bnorm recalibrate --eval with a wrong label count"
    printf '7\n' >"$tmp/seven.csv"
    run recalibrate "$models/mlp.keras" --data "$tmp/x10.csv" --eval "$tmp/x10.csv" "$tmp/seven.csv" -o "$tmp/r.keras"
    expect_status 1 "bnorm recalibrate with label 7 for 3 outputs"
    expect_one_line_error "class index in [0, " "bnorm recalibrate --eval with a label out of range"
    # A model without batch normalization.
    run train --batch-norm off --steps 1 --layers 4 -o "$tmp/plain.keras"
    expect_status 0 "bnorm train --batch-norm off"
    run recalibrate "$tmp/plain.keras" -o "$tmp/r.keras"
    expect_status 1 "bnorm recalibrate a model without batch normalization"
    expect_one_line_error "MODEL $tmp/plain.keras: expected a model with batch-normalization layers, received a model without any" \
      "bnorm recalibrate a model without batch normalization"
    [ ! -e "$tmp/r.keras" ] || fail "a failed bnorm recalibrate wrote r.keras"
    ;;

  # --- bnorm inspect --data: the training/inference gap (issue 17) -------------------------
  # On a Keras fixture: the report's parts, JSON, figures (PNG signature, when gnuplot is
  # installed), and the checks before any work.
  monitor_train)
    require_dataset
    run train --epochs 2 --layers 16 --threads 1 --batch-size 600 --monitor "$tmp/mon" -o "$tmp/m.keras"
    expect_status 0 "bnorm train --epochs 2 --monitor DIR"
    [ -s "$tmp/m.keras" ] || fail "bnorm train --monitor: no model saved"
    [ -s "$tmp/mon/monitor.csv" ] && [ -s "$tmp/mon/monitor.gp" ] || fail "bnorm train --monitor: monitor.csv or monitor.gp missing"
    head -n 1 "$tmp/mon/monitor.csv" | grep -q '^epoch,output_gap,output_mean_abs_difference,batch_normalization_1:mean_abs_shift,' ||
      fail "bnorm train --monitor: monitor.csv header: $(head -n 1 "$tmp/mon/monitor.csv")"
    [ "$(wc -l <"$tmp/mon/monitor.csv")" -eq 3 ] || fail "bnorm train --monitor: monitor.csv has not 2 data rows"
    awk -F, 'NR > 1 && ($1 != NR - 1 || NF != 8 || $2 < 0) { bad = 1 } END { exit bad }' "$tmp/mon/monitor.csv" ||
      fail "bnorm train --monitor: unexpected rows in monitor.csv: $(cat "$tmp/mon/monitor.csv")"
    if command -v gnuplot >/dev/null 2>&1; then
      [ "$(head -c 4 "$tmp/mon/monitor.png" 2>/dev/null | tail -c 3)" = "PNG" ] || fail "bnorm train --monitor: monitor.png is not a PNG"
      expect_contains "$tmp/out" "monitor: 2 epochs, " "bnorm train --monitor"
      expect_contains "$tmp/out" "wrote $tmp/mon/monitor.csv, $tmp/mon/monitor.gp, $tmp/mon/monitor.png" "bnorm train --monitor"
    else
      expect_contains "$tmp/out" "monitor figure not drawn: gnuplot is not installed" "bnorm train --monitor without gnuplot"
    fi
    # Warnings, if any, are one line each.
    if grep -v '^bnorm: warning: epoch [0-9]*: ' "$tmp/err" | grep -q .; then fail "bnorm train --monitor: unexpected stderr: $(cat "$tmp/err")"; fi
    # An interrupted run writes nothing there.
    # (SIGINT at its default action: a background shell would start bnorm with it ignored)
    # Signalled once training shows (not at a fixed time: loading the data can take longer
    # on a loaded machine, and a signal before training starts just ends the process).
    start_bg train --steps 1000000 --layers 16 --threads 1 --batch-size 600 --monitor "$tmp/mon3" -o "$tmp/m3.keras"
    interrupt INT "Epoch 1/" "bnorm train --monitor, SIGINT"
    expect_interrupted SIGINT 130 "the model was not saved to '$tmp/m3.keras'" "bnorm train --monitor, SIGINT"
    [ ! -e "$tmp/mon3" ] && [ ! -e "$tmp/m3.keras" ] || fail "bnorm train --monitor interrupted: wrote $(ls "$tmp/mon3" "$tmp/m3.keras" 2>&1)"
    # An unwritable DIR (a file) fails before any training.
    : >"$tmp/afile"
    run train --epochs 2 --monitor "$tmp/afile" -o "$tmp/m2.keras"
    expect_one_line_error "--monitor" "bnorm train --monitor FILE"
    if grep -q "loading" "$tmp/out"; then fail "bnorm train --monitor FILE: started loading before refusing"; fi
    ;;

  gap_file)
    awk 'BEGIN { for (r = 0; r < 64; r++) { line = ""; for (c = 0; c < 10; c++) line = line (c ? "," : "") ((r * 13 + c * 7) % 17) / 4; print line } }' >"$tmp/x.csv"
    run inspect "$models/mlp.keras"
    expect_status 0 "bnorm inspect without --data"
    cp "$tmp/out" "$tmp/plain.txt"
    if grep -q "gap on" "$tmp/plain.txt"; then fail "bnorm inspect without --data printed a gap report"; fi
    run inspect "$models/mlp.keras" --data "$tmp/x.csv" --batch-size 10
    expect_status 0 "bnorm inspect --data x.csv"
    expect_contains "$tmp/out" "gap on $tmp/x.csv: 64 samples, batches of 10" "bnorm inspect --data"
    expect_contains "$tmp/out" "outputs with batch statistics (training mode) against inference, same batches:" "bnorm inspect --data"
    # The report without --data comes first, unchanged.
    head -n "$(wc -l <"$tmp/plain.txt")" "$tmp/out" | cmp -s - "$tmp/plain.txt" || fail "bnorm inspect --data changed the report before the gap"
    # Every batch-normalization layer has a gap line: name, channels, 4 numbers, 3 counts.
    n_bn=$(grep -c '^ [^ ].*  keras ' "$tmp/plain.txt")
    n_gap=$(sed -n '/^gap on/,$p' "$tmp/out" | awk 'NF == 9 && $2 ~ /^[0-9]+$/ && $7 ~ /^[0-9]+$/' | wc -l)
    [ "$n_bn" -ge 1 ] && [ "$n_gap" -eq "$n_bn" ] || fail "bnorm inspect --data: $n_gap gap lines for $n_bn batch-normalization layers"
    if command -v python3 >/dev/null 2>&1; then
      run inspect "$models/mlp.keras" --data "$tmp/x.csv" --json
      expect_status 0 "bnorm inspect --data --json"
      python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
g = j["gap"]
assert g["samples"] == 64 and g["batch_size"] == 256, g
assert len(g["layers"]) == len(j["batch_normalization_layers"]) >= 1
for l in g["layers"]:
    assert len(l["shift"]) == len(l["variance_ratio"]) == l["channels"], l["name"]
    assert l["max_abs_shift"] == max(abs(s) for s in l["shift"])
    assert l["stale"] == len(l["stale_channels"])
o = g["outputs"]
assert o["rows"] == 64 and o["max_abs_difference"] >= o["mean_abs_difference"] >= 0' "$tmp/out" ||
        fail "bnorm inspect --data --json: unexpected gap object"
    fi
    # Figures.
    run inspect "$models/mlp.keras" --data "$tmp/x.csv" --plots "$tmp/plots/new"
    expect_status 0 "bnorm inspect --data --plots"
    for f in gap.csv shifts.csv gap.gp shifts.gp; do [ -s "$tmp/plots/new/$f" ] || fail "bnorm inspect --plots: $f missing"; done
    [ "$(wc -l <"$tmp/plots/new/shifts.csv")" -gt 1 ] || fail "bnorm inspect --plots: shifts.csv has no channel"
    if command -v gnuplot >/dev/null 2>&1; then
      for f in gap.png shifts.png; do
        is_png "$tmp/plots/new/$f" || fail "bnorm inspect --plots: $f is not a PNG file"
        expect_contains "$tmp/out" "wrote $tmp/plots/new/$f" "bnorm inspect --plots"
      done
    else
      expect_contains "$tmp/out" "figures not drawn: gnuplot is not installed" "bnorm inspect --plots without gnuplot"
    fi
    # Checked before any work.
    run inspect "$models/mlp.keras" --plots "$tmp/plots"
    expect_status 2 "bnorm inspect --plots without --data"
    expect_one_line_error "--plots requires --data" "bnorm inspect --plots without --data"
    run inspect "$models/mlp.keras" --batch-size 3
    expect_status 2 "bnorm inspect --batch-size without --data"
    run inspect "$models/mlp.keras" --data "$tmp/x.csv" --batch-size 0
    expect_status 2 "bnorm inspect --batch-size 0"
    expect_one_line_error "--batch-size" "bnorm inspect --batch-size 0"
    run inspect "$models/mlp.keras" --data "$tmp/x.csv" --plots "$models/mlp.keras"
    expect_status 2 "bnorm inspect --plots MODEL"
    expect_one_line_error "--plots: expected a path other than the inputs" "bnorm inspect --plots MODEL"
    cp "$tmp/x.csv" "$tmp/plots/gap.csv"
    run inspect "$models/mlp.keras" --data "$tmp/plots/gap.csv" --plots "$tmp/plots"
    expect_status 2 "bnorm inspect --plots over the --data file"
    expect_one_line_error "(the --data file)" "bnorm inspect --plots over the --data file"
    : >"$tmp/file"
    run inspect "$models/mlp.keras" --data "$tmp/x.csv" --plots "$tmp/file/sub"
    expect_status 1 "bnorm inspect --plots under a file"
    expect_one_line_error "--plots" "bnorm inspect --plots under a file"
    sed '3s/^[^,]*,/nan,/' "$tmp/x.csv" >"$tmp/nan.csv"
    run inspect "$models/mlp.keras" --data "$tmp/nan.csv"
    expect_status 1 "bnorm inspect --data with a NaN"
    expect_one_line_error "--data $tmp/nan.csv: expected finite values, received nan at row 3, column 1" "bnorm inspect --data with a NaN"
    run inspect "$models/mlp.keras" --data "$arrays/f4_10x784.npy"
    expect_status 1 "bnorm inspect --data of the wrong width"
    expect_one_line_error "--data" "bnorm inspect --data of the wrong width"
    run inspect "$models/mlp.keras" --data "$tmp/nothere.csv"
    expect_status 1 "bnorm inspect --data missing"
    ;;

  # A model trained 30 steps with momentum 0.99 (0.99^30 = 74 % of each moving average is
  # still its initial value) has stale statistics: large shifts, stale channels,
  # unconverged layers and a training/inference gap in the outputs. Recalibrated on the
  # same data, its shifts are 0 and its variance ratios 1.
  gap_stale)
    require_dataset
    run train --steps 30 --momentum 0.99 --layers 32,32 -o "$tmp/stale.keras"
    expect_status 0 "bnorm train --steps 30 --momentum 0.99"
    rows_of_784 300 "$tmp/x.csv"
    run inspect "$tmp/stale.keras" --data "$tmp/x.csv" --plots "$tmp/plots"
    expect_status 0 "bnorm inspect --data on a stale model"
    sed -n '/^gap on/,$p' "$tmp/out" | awk 'NF == 9 && $1 ~ /^batch_normalization/' >"$tmp/gap.txt"
    [ "$(wc -l <"$tmp/gap.txt")" -eq 2 ] || fail "bnorm inspect --data: expected 2 gap lines: $(cat "$tmp/out")"
    awk '$4 > 0.5 && $7 > 0 { big++ } END { exit !(big >= 1) }' "$tmp/gap.txt" ||
      fail "bnorm inspect --data on a stale model: no layer with a shift above 0.5 and stale channels: $(cat "$tmp/gap.txt")"
    expect_contains "$tmp/out" "unconverged (the moving average still weighs its initial values; see the warnings): batch_normalization_1, batch_normalization_2" "bnorm inspect --data on a stale model"
    awk '/mean \|difference\|/ { exit !($3 > 1e-3) }' "$tmp/out" || fail "bnorm inspect --data on a stale model: no output gap: $(grep 'mean |difference|' "$tmp/out")"
    if command -v gnuplot >/dev/null 2>&1; then
      is_png "$tmp/plots/gap.png" || fail "gap.png is not a PNG file"
      is_png "$tmp/plots/shifts.png" || fail "shifts.png is not a PNG file"
    fi
    run recalibrate "$tmp/stale.keras" --data "$tmp/x.csv" --no-eval -o "$tmp/recal.keras"
    expect_status 0 "bnorm recalibrate the stale model"
    run inspect "$tmp/recal.keras" --data "$tmp/x.csv"
    expect_status 0 "bnorm inspect --data on the recalibrated model"
    sed -n '/^gap on/,$p' "$tmp/out" | awk 'NF == 9 && $1 ~ /^batch_normalization/' >"$tmp/gap.txt"
    [ "$(wc -l <"$tmp/gap.txt")" -eq 2 ] || fail "bnorm inspect --data after recalibrate: expected 2 gap lines"
    awk '$4 > 1e-3 || $5 < 0.999 || $6 > 1.001 || $7 != 0 { bad = 1 } END { exit bad }' "$tmp/gap.txt" ||
      fail "bnorm inspect --data after recalibrate on the same data: shifts not near 0: $(cat "$tmp/gap.txt")"
    # The model file is not changed by measuring.
    cp "$tmp/recal.keras" "$tmp/copy.keras"
    run inspect "$tmp/copy.keras" --data "$tmp/x.csv"
    cmp -s "$tmp/recal.keras" "$tmp/copy.keras" || fail "bnorm inspect --data changed the model file"
    ;;

  *)
    echo "cli_test.sh: unknown case '$case_name'" >&2
    exit 2
    ;;
esac

if [ "$failures" -ne 0 ]; then
  echo "$case_name: $failures check(s) failed" >&2
  exit 1
fi
echo "$case_name: passed"
