# bench/runtime/bench.mk - runtime micro-benchmarks, included by the top
# Makefile after its runtime variables (BUILD, CC, ALL_CFLAGS, ALL_LDFLAGS,
# RT_LIB, RT_CFLAGS) are defined, e.g. at its end:
#
#     include bench/runtime/bench.mk
#
# Until then: make -f Makefile -f bench/runtime/bench.mk bench-runtime
#
#   $(BUILD)/bench/bench_runtime   the C benchmark program (-O2, on $(RT_LIB))
#   bench-runtime                  builds it and runs bench/runtime/run.sh,
#                                  which compares against the Go reference
#                                  and writes $(BUILD)/bench/runtime.json.
#   bench-net                      loopback echo and upstream-client benchmarks
#   bench-gateway                  the whole gateway under wrk with mock
#                                  backends on free ports
#                                  (bench/gateway/run.sh; writes
#                                  $(BUILD)/bench/gateway-<stamp>.json)
# run.sh's knobs (PROCS, COUNT, BENCHTIME_MS, PARKED, GO_REF, ...) pass
# through the environment: COUNT=1 BENCHTIME_MS=200 make bench-runtime

BENCH_RT_SRC := bench/runtime/bench_runtime.c
BENCH_RT_OBJ := $(BUILD)/bench/bench_runtime.o
BENCH_RT_BIN := $(BUILD)/bench/bench_runtime

.PHONY: bench-runtime

$(BENCH_RT_OBJ): $(BENCH_RT_SRC)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -O2 $(RT_CFLAGS) -c $< -o $@

$(BENCH_RT_BIN): $(BENCH_RT_OBJ) $(RT_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^

bench-runtime: $(BENCH_RT_BIN)
	BENCH_BIN=$(abspath $(BENCH_RT_BIN)) BENCH_OUT=$(abspath $(BUILD)/bench) \
		bench/runtime/run.sh

-include $(BENCH_RT_OBJ:.o=.d)

# Loopback echo round trips per second through the netpoller and sockets.
BENCH_ECHO_BIN := $(BUILD)/bench/bench_echo

$(BUILD)/bench/bench_echo.o: bench/net/bench_echo.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(RT_CFLAGS) -c $< -o $@

$(BENCH_ECHO_BIN): $(BUILD)/bench/bench_echo.o $(RT_LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^

# Upstream calls per second through the libcurl client against a tiny
# epoll backend (a separate process, so the client's CPU is what counts).
BENCH_UP_BIN := $(BUILD)/bench/bench_upstream
MINI_BACKEND := $(BUILD)/bench/mini_backend

$(BUILD)/bench/bench_upstream.o: bench/net/bench_upstream.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(GW_CFLAGS) -c $< -o $@

$(BENCH_UP_BIN): $(BUILD)/bench/bench_upstream.o $(GW_LINK)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(MINI_BACKEND): bench/net/mini_backend.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -o $@ $<

.PHONY: bench-net
bench-net: $(BENCH_ECHO_BIN) $(BENCH_UP_BIN) $(MINI_BACKEND)
	$(BENCH_ECHO_BIN) --procs 2 --seconds 3 --conns 1,64
	bench/net/run-upstream.sh $(MINI_BACKEND) $(BENCH_UP_BIN)

-include $(BUILD)/bench/bench_echo.d $(BUILD)/bench/bench_upstream.d

# The whole gateway under load: three mock backends and build/gateway on free
# loopback ports, wrk at each of CONCURRENCIES. Builds nothing itself; its
# knobs (CONCURRENCIES, DURATION, REPEAT, DELAY_PRICING_MS, WORKERS, CLIENT,
# ...) pass through the environment or make's command line:
#     make bench-gateway CONCURRENCIES=32 DURATION=2
.PHONY: bench-gateway
bench-gateway: $(BUILD)/gateway $(BUILD)/mock-backend
	BUILD=$(BUILD) bench/gateway/run.sh
