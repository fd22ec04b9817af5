# deltacome — build wrapper around CMake.
#   make            build the library, CLI and tests (GPU modules when nvcc/hipcc are found)
#   make demo       end-to-end demo on the CPU backend (small model pair made on the fly)
#   make test       everything CI runs: unit tests, CLI tests, ASan/UBSan + TSan builds, bounded fuzzing,
#                   packaging (install + C/Rust/Go/Python bindings), GPU sources compiled (not run)
#   make test-gpu   GPU tests on the local CUDA device (after a build with DC_CUDA=ON)
#   make bench-gpu  GPU benchmark
#   make install PREFIX=/usr/local
BUILD     ?= build
PREFIX    ?= /usr/local
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE     ?= cmake
CMAKE_FLAGS ?=
FUZZ_SECONDS ?= 60

.PHONY: all deps build demo test test-unit test-asan test-tsan test-fuzz test-packaging test-gpu bench-gpu \
        build-gpu-check install clean

all: build

deps:
	@tools/install-deps.sh $(DEPS_FLAGS)

$(BUILD)/CMakeCache.txt:
	@tools/install-deps.sh $(DEPS_FLAGS)
	$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	$(CMAKE) --build $(BUILD) -j $(JOBS) $(BUILD_TARGET)

demo:
	@$(MAKE) --no-print-directory build BUILD=build-demo CMAKE_FLAGS="-DDC_CUDA=OFF -DDC_HIP=OFF -DDC_BUILD_TESTS=OFF -DDC_BUILD_BENCH=OFF"
	@tools/demo.sh build-demo/deltacome demo-out

test:
	@$(MAKE) --no-print-directory deps DEPS_FLAGS="--go --hip"
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory test-asan
	@$(MAKE) --no-print-directory test-tsan
	@$(MAKE) --no-print-directory test-fuzz
	@$(MAKE) --no-print-directory test-packaging
	@echo "make test: all passed"

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE gpu

test-asan:
	@$(MAKE) --no-print-directory build BUILD=build-asan \
	  CMAKE_FLAGS="-DDC_CUDA=OFF -DDC_HIP=OFF -DDC_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDC_SANITIZE=address;undefined"
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS) -LE "gpu|slow"

test-tsan:
	@if [ -f tests/stress/CMakeLists.txt ]; then \
	  $(MAKE) --no-print-directory build BUILD=build-tsan \
	    CMAKE_FLAGS="-DDC_CUDA=OFF -DDC_HIP=OFF -DDC_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDC_SANITIZE=thread" BUILD_TARGET="--target dc_stress_concurrency dc_test_pool" && \
	  cd build-tsan && OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -L stress; \
	else echo "test-tsan: no stress tests yet"; fi

test-fuzz:
	@if [ -f tests/fuzz/CMakeLists.txt ]; then \
	  $(MAKE) --no-print-directory build BUILD=build-fuzz \
	    CMAKE_FLAGS="-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DDC_CUDA=OFF -DDC_HIP=OFF -DDC_BUILD_BENCH=OFF -DDC_FUZZ=ON" BUILD_TARGET="--target dc_fuzzers" && \
	  tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS); \
	else echo "test-fuzz: no fuzz targets yet"; fi

test-packaging: build
	@if [ -x tests/packaging/run.sh ]; then tests/packaging/run.sh $(BUILD); else echo "test-packaging: not present"; fi

test-gpu:
	@$(MAKE) --no-print-directory build BUILD=build-gpu CMAKE_FLAGS="-DDC_CUDA=ON -DDC_HIP=OFF $(CMAKE_FLAGS)"
	cd build-gpu && ctest --output-on-failure -L gpu

bench-gpu:
	@$(MAKE) --no-print-directory build BUILD=build-gpu CMAKE_FLAGS="-DDC_CUDA=ON -DDC_HIP=OFF $(CMAKE_FLAGS)"
	build-gpu/bench/bench_gpu_apply

install: build
	$(CMAKE) --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf build build-demo build-asan build-tsan build-fuzz build-gpu demo-out
