#!/usr/bin/env bash
# Tests of the `bnorm` command line tool: each case runs the built binary and checks its
# exit status, its output and the files it writes. CTest runs one case per test:
#
#   tests/apps/cli_test.sh BNORM_BINARY CASE
#
# Cases: help, experiment_report, train_runs, unknown_option, unknown_command,
# missing_data_dir, bad_steps, bad_values.
set -u

bnorm="$1"
case_name="$2"
data_dir=/usr/share/datasets/fashion-mnist
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

is_png() {  # the 8-byte PNG signature
  [ -s "$1" ] && [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]
}

case "$case_name" in
  help)
    run --help
    expect_status 0 "bnorm --help"
    for sub in experiment train; do expect_contains "$tmp/out" "$sub" "bnorm --help lists $sub"; done
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
    for opt in --layers --activation --batch-norm --momentum --epsilon --optimizer --learning-rate --epochs --steps; do
      expect_contains "$tmp/out" "$opt" "bnorm train --help"
    done
    expect_contains "$tmp/out" "Keras model files issue" "bnorm train --help says saving is not there yet"
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

  train_runs)
    require_dataset
    run train --steps 30 --layers 32,16 --threads 1
    expect_status 0 "bnorm train --steps 30"
    expect_contains "$tmp/out" "test (inference mode" "bnorm train reports the test accuracy"
    expect_contains "$tmp/out" "not saved" "bnorm train says the model is not saved"
    ;;

  unknown_option)
    run experiment --no-such-option
    expect_one_line_error "--no-such-option" "bnorm experiment --no-such-option"
    run train --no-such-option 3
    expect_one_line_error "--no-such-option" "bnorm train --no-such-option"
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
    run train --data-dir "$tmp/empty" --steps 10
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
