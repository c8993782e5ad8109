# fanfold — the one build entry point (GNU make).
#
# Everything is built out of tree under $(BUILD) (default build/). Sanitizer
# builds are the same Makefile run recursively with BUILD=build/asan or
# build/tsan, so they never replace build/gateway.
#
# The user-facing targets (all, test, demo) first run `deps`, then re-enter
# make for the real work: the sub-make starts only after deps has finished,
# which keeps `make -j` from compiling while packages are being installed.

BUILD ?= build
SAN ?=

LLHTTP_SRC_DIR := /usr/share/llhttp
LLHTTP_INC_DIR := /usr/share/include/llhttp
PKG_MODULES := libcurl libcares jansson openssl

ifeq ($(SAN),address)
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=all
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else ifeq ($(SAN),thread)
SAN_FLAGS := -fsanitize=thread -fno-omit-frame-pointer
SAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
else ifneq ($(SAN),)
$(error SAN must be empty, address or thread, not '$(SAN)')
endif
# FUZZ=1 (make fuzz): libFuzzer's coverage instrumentation everywhere.
ifneq ($(FUZZ),)
SAN_FLAGS += -fsanitize=fuzzer-no-link
endif

# LTO=1: the same build with link-time optimisation (make test runs the
# tests this way too, in $(BUILD)/lto: cross-file inlining is where code
# that keeps a thread-local address or errno across a park breaks).
LTO ?=
ifneq ($(LTO),)
LTO_FLAGS := -flto=auto
AR := gcc-ar
ifneq ($(findstring clang,$(CC)),)
LTO_FLAGS := -flto
AR := llvm-ar
endif
endif

WARN := -Wall -Wextra -Werror
BASE_CFLAGS := -std=c11 -O2 -g $(WARN) -D_GNU_SOURCE -pthread -MMD -MP \
	-fstack-clash-protection
ALL_CFLAGS = $(BASE_CFLAGS) $(SAN_FLAGS) $(LTO_FLAGS) $(CFLAGS)
ALL_LDFLAGS = -pthread $(SAN_FLAGS) $(LTO_FLAGS) $(LDFLAGS)

# pkg-config runs once per make invocation; before `make deps` it may be
# missing, which only the top-level make (that runs deps) ever sees.
PKG_CFLAGS := $(shell pkg-config --cflags $(PKG_MODULES) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKG_MODULES) 2>/dev/null)

# --- llhttp: third-party sources, compiled strict, warnings relaxed only
# for what they trip.
LLHTTP_NAMES := api http llhttp
LLHTTP_OBJS := $(LLHTTP_NAMES:%=$(BUILD)/llhttp/%.o)
LLHTTP_CFLAGS := -I$(LLHTTP_INC_DIR) -DLLHTTP_STRICT_MODE=1
LLHTTP_RELAX := -Wno-unused-parameter

# --- runtime library
RT_C_SRCS := $(wildcard runtime/*.c)
RT_S_SRCS := $(wildcard runtime/*.S)
RT_OBJS := $(RT_C_SRCS:%.c=$(BUILD)/%.o) $(RT_S_SRCS:%.S=$(BUILD)/%.o)
RT_LIB := $(BUILD)/libfanfold_rt.a
RT_CFLAGS := -Iruntime

# --- gateway library and binary
GW_MAIN := $(wildcard gateway/main.c)
GW_SRCS := $(filter-out gateway/main.c,$(wildcard gateway/*.c))
# Gateway objects live in $(BUILD)/obj/gateway: $(BUILD)/gateway is the binary.
GW_OBJS := $(GW_SRCS:%.c=$(BUILD)/obj/%.o)
GW_LIB := $(BUILD)/libfanfold_gw.a
GW_CFLAGS := -Igateway -Iruntime -I$(LLHTTP_INC_DIR) -DLLHTTP_STRICT_MODE=1 \
	$(PKG_CFLAGS)
GW_BIN := $(if $(GW_MAIN),$(BUILD)/gateway)
GW_LINK := $(GW_LIB) $(LLHTTP_OBJS) $(RT_LIB)

# --- tests: one .c per binary
RT_TEST_SRCS := $(wildcard tests/runtime/test_*.c)
GW_TEST_SRCS := $(wildcard tests/gateway/test_*.c)
RT_TESTS := $(RT_TEST_SRCS:%.c=$(BUILD)/%)
GW_TESTS := $(GW_TEST_SRCS:%.c=$(BUILD)/%)
# Fuzz targets (tests/fuzz/fuzz_*.c): make test replays each one's corpus
# through it as $(BUILD)/tests/fuzz/test_fuzz_<name> (main in replay.c);
# make fuzz builds them for libFuzzer (below). The end-to-end ones also
# link harness.c, an in-process gateway.
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES := $(FUZZ_SRCS:tests/fuzz/%.c=%)
FUZZ_HARNESSED := fuzz_server fuzz_proxy
FUZZ_REPLAYS := $(FUZZ_NAMES:%=$(BUILD)/tests/fuzz/test_%)
TESTS := $(RT_TESTS) $(GW_TESTS) $(FUZZ_REPLAYS)

FMT_SRCS := $(wildcard runtime/*.c runtime/*.h gateway/*.c gateway/*.h tests/*.h \
	tests/*/*.c tests/*/*.h)

.DEFAULT_GOAL := all
.PHONY: all deps binaries tests test test-asan test-race certs clean fmt demo

all: deps
	+@$(MAKE) --no-print-directory binaries

deps:
	@.ci/deps.sh

binaries: $(RT_LIB) $(GW_LIB) $(LLHTTP_OBJS) $(GW_BIN) $(TESTS) \
	$(BUILD)/mock-backend

tests: $(TESTS)

test: deps
	@tests/banned-calls.sh
	+@$(MAKE) --no-print-directory binaries
	@env CMOCKA_MESSAGE_OUTPUT=stdout BUILD=$(BUILD) $(SAN_ENV) \
		tests/run-tests.sh $(BUILD)/tests tests/docker-check.sh \
		tests/k8s-check.sh tests/ops-test.py tests/smuggling-test.py \
		tests/hostile-test.py tests/backend-fault-test.py
ifeq ($(SAN)$(LTO),)
	@echo "=== the same tests, built with -O2 -flto ($(BUILD)/lto)"
	+@$(MAKE) --no-print-directory BUILD=$(BUILD)/lto LTO=1 test-lto-run
endif

.PHONY: test-lto-run
test-lto-run: tests
	@env CMOCKA_MESSAGE_OUTPUT=stdout tests/run-tests.sh $(BUILD)/tests

test-asan:
	+@$(MAKE) --no-print-directory BUILD=build/asan CC=clang SAN=address test

test-race:
	+@$(MAKE) --no-print-directory BUILD=build/tsan CC=clang SAN=thread test

demo: deps
	+@$(MAKE) --no-print-directory binaries
	@BUILD=$(BUILD) scripts/demo.sh

certs:
	@certs/make-certs.sh

clean:
	rm -rf build

fmt:
	clang-format -i $(FMT_SRCS)

# --- rules

$(BUILD)/llhttp/%.o: $(LLHTTP_SRC_DIR)/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LLHTTP_RELAX) $(LLHTTP_CFLAGS) -c $< -o $@

$(BUILD)/runtime/%.o: runtime/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(RT_CFLAGS) -c $< -o $@

$(BUILD)/runtime/%.o: runtime/%.S
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(RT_CFLAGS) -c $< -o $@

$(RT_LIB): $(RT_OBJS)
	@mkdir -p $(@D)
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/obj/gateway/%.o: gateway/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(GW_CFLAGS) -c $< -o $@

# config.c embeds routes/demo.json with .incbin (path from the repository root).
$(BUILD)/obj/gateway/config.o: routes/demo.json

$(GW_LIB): $(GW_OBJS)
	@mkdir -p $(@D)
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/gateway: $(BUILD)/obj/gateway/main.o $(GW_LINK)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/tests/runtime/%.o: tests/runtime/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(RT_CFLAGS) -c $< -o $@

$(BUILD)/tests/gateway/%.o: tests/gateway/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(GW_CFLAGS) -c $< -o $@

$(RT_TESTS): $(BUILD)/tests/runtime/%: $(BUILD)/tests/runtime/%.o $(RT_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lcmocka

$(GW_TESTS): $(BUILD)/tests/gateway/%: $(BUILD)/tests/gateway/%.o $(GW_LINK)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lcmocka $(PKG_LIBS)

$(BUILD)/tests/fuzz/%.o: tests/fuzz/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(GW_CFLAGS) -c $< -o $@

$(FUZZ_NAMES:%=$(BUILD)/tests/fuzz/replay_%.o): $(BUILD)/tests/fuzz/replay_%.o: \
		tests/fuzz/replay.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -DFFZ_CORPUS='"tests/fuzz/corpus/$*"' -c $< -o $@

fuzz_harness = $(if $(filter $(1),$(FUZZ_HARNESSED)),$(BUILD)/tests/fuzz/harness.o)

.SECONDEXPANSION:
$(FUZZ_REPLAYS): $(BUILD)/tests/fuzz/test_%: $(BUILD)/tests/fuzz/%.o \
		$(BUILD)/tests/fuzz/replay_%.o $$(call fuzz_harness,$$*) $(GW_LINK)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# The mock backend (demo and integration tests); its test runs it.
$(BUILD)/tests/mock_backend.o: tests/mock_backend.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(GW_CFLAGS) -c $< -o $@

$(BUILD)/mock-backend: $(BUILD)/tests/mock_backend.o $(GW_LINK)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/tests/gateway/test_mock_backend: | $(BUILD)/mock-backend
$(BUILD)/tests/gateway/test_gateway: | $(BUILD)/gateway $(BUILD)/mock-backend

# Header dependencies written by -MMD -MP next to each object.
ALL_OBJS := $(LLHTTP_OBJS) $(RT_OBJS) $(GW_OBJS) \
	$(if $(GW_MAIN),$(BUILD)/obj/gateway/main.o) \
	$(RT_TESTS:%=%.o) $(GW_TESTS:%=%.o) \
	$(FUZZ_NAMES:%=$(BUILD)/tests/fuzz/%.o) \
	$(FUZZ_NAMES:%=$(BUILD)/tests/fuzz/replay_%.o) \
	$(BUILD)/tests/fuzz/harness.o $(BUILD)/tests/mock_backend.o
-include $(ALL_OBJS:.o=.d)

# --- fuzzing: `make fuzz` builds every target for libFuzzer with clang,
# ASan + UBSan and coverage instrumentation of the whole tree (runtime,
# gateway, llhttp) in build/fuzz, then runs each for FUZZ_SECONDS (60)
# from its seed corpus (tests/fuzz/run.sh says where the results go).
# FUZZ_TARGETS picks some: make fuzz FUZZ_TARGETS="fuzz_json".
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(FUZZ_NAMES)
FUZZ_BINS := $(FUZZ_NAMES:%=$(BUILD)/bin/%)
.PHONY: fuzz fuzz-run
fuzz: deps
	+@$(MAKE) --no-print-directory BUILD=build/fuzz CC=clang SAN=address \
		FUZZ=1 fuzz-run

$(FUZZ_BINS): $(BUILD)/bin/%: $(BUILD)/tests/fuzz/%.o \
		$$(call fuzz_harness,$$*) $(GW_LINK)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(PKG_LIBS)

fuzz-run: $(FUZZ_TARGETS:%=$(BUILD)/bin/%)
	@tests/fuzz/run.sh $(BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# --- make soak: sustained load with backend faults, restarts and client
# disconnects, watched for growth (scripts/soak.py; SOAK_SECONDS [120],
# SOAK_CONNECTIONS [64]). Not part of make test.
.PHONY: soak
soak: deps
	+@$(MAKE) --no-print-directory binaries
	@BUILD=$(BUILD) scripts/soak.py

# --- benchmarks (not part of `make test`): `make bench` runs them all, one
# after the other even under -j (two benchmarks at once would skew both).
include bench/runtime/bench.mk

.PHONY: bench
bench:
	+@$(MAKE) --no-print-directory bench-runtime
	+@$(MAKE) --no-print-directory bench-net
	+@$(MAKE) --no-print-directory bench-gateway

# --- aarch64: the runtime cross-compiled (warning-free, -Werror) and a
# smoke test run under qemu-user. Not part of `make test`; needs Debian's
# gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user.
.PHONY: check-aarch64
check-aarch64:
	@command -v aarch64-linux-gnu-gcc >/dev/null || { echo "check-aarch64: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user" >&2; exit 1; }
	+@$(MAKE) --no-print-directory BUILD=build/aarch64 CC=aarch64-linux-gnu-gcc AR=aarch64-linux-gnu-ar build/aarch64/libfanfold_rt.a
	aarch64-linux-gnu-gcc $(BASE_CFLAGS) -static -Iruntime tests/cross/smoke.c build/aarch64/libfanfold_rt.a -o build/aarch64/smoke
	@command -v qemu-aarch64 >/dev/null && qemu-aarch64 build/aarch64/smoke || echo "check-aarch64: built; qemu-aarch64 missing, not run"
