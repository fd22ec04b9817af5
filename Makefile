# deltacome — build wrapper around CMake.
#   make            build the library, CLI and tests (GPU modules when nvcc/hipcc are found)
#   make demo       end-to-end demo on the CPU backend (small model pair made on the fly)
#   make test       everything CI runs: unit tests, CLI tests, ASan/UBSan + TSan builds, bounded fuzzing,
#                   packaging (install + C/Rust/Go/Python bindings), GPU sources compiled (not run)
#   make test-gpu   GPU tests on the local CUDA device (after a build with DC_CUDA=ON)
#   make bench-gpu  GPU benchmark
#   make bench-cpu  CPU benchmark: the CPU backend's apply against fp32 OpenBLAS paths of the same layer
#   make install PREFIX=/usr/local
BUILD     ?= build
PREFIX    ?= /usr/local
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE     ?= cmake
CMAKE_FLAGS ?=
FUZZ_SECONDS ?= 60

.PHONY: all deps build demo test test-unit test-asan test-tsan test-fuzz test-packaging test-gpu bench-gpu bench-cpu \
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
	@$(MAKE) --no-print-directory build-gpu-check
	@echo "make test: all passed"

# The CPU build that the unit, CLI and packaging tests use (GPU modules are compiled separately,
# by build-gpu-check, so a machine without GPU toolkits still runs every CPU test).
test-unit:
	@$(MAKE) --no-print-directory build CMAKE_FLAGS="-DDC_CUDA=OFF -DDC_HIP=OFF $(CMAKE_FLAGS)"
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -LE gpu

test-asan:
	@$(MAKE) --no-print-directory build BUILD=build-asan \
	  CMAKE_FLAGS="-DDC_CUDA=OFF -DDC_HIP=OFF -DDC_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDC_SANITIZE=address,undefined"
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS) -LE "gpu|slow"

test-tsan:
	@if [ -f tests/stress/CMakeLists.txt ]; then \
	  $(MAKE) --no-print-directory build BUILD=build-tsan \
	    CMAKE_FLAGS="-DDC_CUDA=OFF -DDC_HIP=OFF -DDC_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDC_SANITIZE=thread" BUILD_TARGET="--target dc_stress_concurrency dc_test_pool dc_test_backends" && \
	  cd build-tsan && OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1 ctest --output-on-failure -L stress && \
	  TSAN_OPTIONS=halt_on_error=1 tests/dc_test_backends --gtest_filter='DeviceArena.*'; \
	else echo "test-tsan: no stress tests yet"; fi

test-fuzz:
	@if [ -f tests/fuzz/CMakeLists.txt ]; then \
	  $(MAKE) --no-print-directory build BUILD=build-fuzz \
	    CMAKE_FLAGS="-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DDC_CUDA=OFF -DDC_HIP=OFF -DDC_BUILD_BENCH=OFF -DDC_FUZZ=ON" BUILD_TARGET="--target dc_fuzzers" && \
	  tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS); \
	else echo "test-fuzz: no fuzz targets yet"; fi

test-packaging:
	@$(MAKE) --no-print-directory build CMAKE_FLAGS="-DDC_CUDA=OFF -DDC_HIP=OFF $(CMAKE_FLAGS)"
	@if [ -x tests/packaging/run.sh ]; then tests/packaging/run.sh $(BUILD); else echo "test-packaging: not present"; fi

# Compiles the CUDA and HIP backend modules for their default architectures (CUDA 80;86;89;90,
# HIP gfx908;gfx90a;gfx940;gfx1030) without a GPU, and checks the modules export their entry point.
build-gpu-check:
	@if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || command -v hipcc >/dev/null; then \
	  $(MAKE) --no-print-directory build BUILD=build-gpucheck \
	    CMAKE_FLAGS="-DDC_BUILD_BENCH=OFF $(CMAKE_FLAGS)" BUILD_TARGET="--target dc_gpu_modules" && \
	  cd build-gpucheck && ctest --output-on-failure -L module; \
	else echo "build-gpu-check: no nvcc or hipcc: GPU modules not compiled"; fi

# GPU tests on this machine's CUDA device (built for the local architecture).
test-gpu:
	@$(MAKE) --no-print-directory build BUILD=build-gpu \
	  CMAKE_FLAGS="-DDC_CUDA=ON -DDC_HIP=OFF -DCMAKE_CUDA_ARCHITECTURES=native $(CMAKE_FLAGS)"
	cd build-gpu && ctest --output-on-failure -L gpu

bench-gpu: test-gpu
	-python3 bench/torch_baseline.py build-gpu/torch_us.txt
	build-gpu/bench/bench_gpu_apply --torch-us build-gpu/torch_us.txt

# The CPU backend's dc_apply_delta_linear against dense and low-rank fp32 OpenBLAS, same process
# (bench/cpu/apply_cpu_bench.cpp; BENCH_ARGS=--quick: the 4096×4096 layer only).
bench-cpu:
	@$(MAKE) --no-print-directory build CMAKE_FLAGS="-DDC_CUDA=OFF -DDC_HIP=OFF $(CMAKE_FLAGS)" \
	  BUILD_TARGET="--target dc_bench_apply_cpu"
	$(BUILD)/bench/dc_bench_apply_cpu $(BENCH_ARGS)

install: build
	$(CMAKE) --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf build build-demo build-asan build-tsan build-fuzz build-gpu build-gpucheck demo-out
