# bnorm: the two commands of the README.
#   make run   installs what is missing, builds, runs the main job (bnorm experiment)
#   make test  installs what is missing, builds, runs every test, again with another
#              OpenBLAS kernel family and the generic SIMD loops, then again under
#              AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench installs the benchmark's optional peers (libtorch, oneDNN), builds the
#              batch-norm benchmark in $(BENCH_BUILD), runs it, writes
#              bench/results/latest.json (docs/benchmarks.md)
#   make bench-train  trains the same small models in bnorm, Keras and PyTorch and prints
#              seconds per epoch (needs the fixture venv: docs/benchmarks.md)
#   make bench-cnn  times ResNet50, MobileNetV2, EfficientNetB0 (inference and a training
#              step) in bnorm, Keras 3 and PyTorch at 1 and 2 threads, writes
#              bench/cnn/results.json (needs the fixture venv; installs python3-torch)
#   make package  builds the Debian package (bnorm_VERSION_ARCH.deb) in $(PACKAGE_BUILD)
BUILD      ?= build
ASAN_BUILD ?= build-asan
BENCH_BUILD ?= build-bench
PACKAGE_BUILD ?= build-package
BENCH_ARGS ?=
JOBS       ?= $(shell nproc)
# The interpreter the Python module (python/) is built for and tested with: Debian's, whose
# numpy and pytest come from python3-numpy and python3-pytest (not a pyenv or venv python3).
PYTHON     ?= /usr/bin/python3

.PHONY: all deps build run examples test test-fast test-sanitize bench bench-train bench-cnn package clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(PYTHON)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The batch-normalization experiment (docs/experiment.md): report in reports/experiment/.
# Builds only the tool (not the tests), so a fresh clone is done within minutes.
run: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS) --target bnorm_cli
	$(BUILD)/bnorm experiment

examples: build
	@bash scripts/run-examples.sh $(BUILD)

# Every test, then the same tests again with another OpenBLAS kernel family and bnorm's
# generic SIMD loops (scripts/test-variant.sh), as another machine would choose them, then
# programs built against the installed tree and with add_subdirectory
# (scripts/test-consumers.sh, tests/consumers/).
test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@bash scripts/test-variant.sh $(BUILD)
	@bash scripts/test-consumers.sh $(BUILD)

test-sanitize: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DBNORM_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

test: test-fast test-sanitize

bench: deps
	@bash scripts/install-bench-deps.sh
	cmake -S . -B $(BENCH_BUILD) -DCMAKE_BUILD_TYPE=Release -DBNORM_BUILD_BENCH=ON \
	  -DBNORM_BUILD_TESTS=OFF -DBNORM_BUILD_EXAMPLES=OFF
	cmake --build $(BENCH_BUILD) -j $(JOBS) --target bench_batch_norm
	$(BENCH_BUILD)/bench/bench_batch_norm --out bench/results/latest.json $(BENCH_ARGS)

bench-train: deps
	cmake -S . -B $(BENCH_BUILD) -DCMAKE_BUILD_TYPE=Release -DBNORM_BUILD_BENCH=ON \
	  -DBNORM_BUILD_TESTS=OFF -DBNORM_BUILD_EXAMPLES=OFF
	cmake --build $(BENCH_BUILD) -j $(JOBS) --target bnorm_train_bench
	python3 bench/training/run_training_bench.py --bnorm-bin $(BENCH_BUILD)/bench/training/bnorm_train_bench

# Keras runs in $(BNORM_KERAS_PYTHON) (default /tmp/venv-tf/bin/python: docs/benchmarks.md),
# PyTorch in Debian's /usr/bin/python3 with python3-torch and python3-torchvision.
CNN_BENCH_ARGS ?=
bench-cnn: deps
	@bash scripts/apt-install.sh --optional "bnorm bench-cnn" python3-torch python3-torchvision
	cmake -S . -B $(BENCH_BUILD) -DCMAKE_BUILD_TYPE=Release -DBNORM_BUILD_BENCH=ON \
	  -DBNORM_BUILD_TESTS=OFF -DBNORM_BUILD_EXAMPLES=OFF
	cmake --build $(BENCH_BUILD) -j $(JOBS) --target bnorm_cnn_bench
	/usr/bin/python3 bench/cnn/run_cnn_bench.py --bnorm-bin $(BENCH_BUILD)/bench/cnn/bnorm_cnn_bench \
	  --cache $(BENCH_BUILD)/cnn-models $(CNN_BENCH_ARGS)

# The Debian package: the libraries, the tool, headers, CMake and pkg-config files, built
# for /usr in their own folder (no tests) and packed by CPack (cmake/install.cmake).
package: deps
	cmake -S . -B $(PACKAGE_BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
	  -DBUILD_SHARED_LIBS=ON -DBNORM_BUILD_TESTS=OFF -DBNORM_BUILD_EXAMPLES=OFF -DBNORM_BUILD_FUZZ=OFF
	cmake --build $(PACKAGE_BUILD) -j $(JOBS)
	cd $(PACKAGE_BUILD) && cpack -G DEB
	@ls $(PACKAGE_BUILD)/*.deb

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(BENCH_BUILD) $(PACKAGE_BUILD)
