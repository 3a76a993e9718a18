# sluice — `make` builds build/sluice; `make demo` and `make test` are the
# README's two commands and install what they need first.

CC      ?= cc
PKGS    := libzmq libxxhash libpq msgpack liblz4 sqlite3 jansson libmicrohttpd libmariadb
CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LIBS    = $(PKG_LIBS) -lpthread -lm

LIB_SRC := $(filter-out base/san_options.c,$(wildcard base/*.c)) $(wildcard merkle/*.c proto/*.c connectors/*.c worker/*.c coordinator/*.c client/*.c control/*.c)
CLI_SRC := $(wildcard cli/*.c)
HDRS    := $(wildcard */*.h)
UNIT    := $(patsubst tests/%.c,%,$(wildcard tests/test_*.c))

OPT_FLAGS  := -O2 -g
SAN_FLAGS  := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

.PHONY: all deps demo demo-migration test unit integration clean format bench test-random test-mysql-random test-repair-random fuzz soak chaos

all: build/sluice

build/sluice: $(LIB_SRC) $(CLI_SRC) $(HDRS)
	@mkdir -p build
	$(CC) $(CSTD) $(WARN) $(OPT_FLAGS) $(PKG_CFLAGS) -o $@ $(LIB_SRC) $(CLI_SRC) $(LIBS)

# SAN_SRC: sanitizer exit codes of their own (86 ASan, 87 UBSan, 88 leaks),
# never 1 or 2; in the sanitizer build only.
SAN_SRC := base/san_options.c

# The sanitizer build compiles each source once (build/asan/obj/) for the
# binary and every unit test, instead of once per test.
SAN_OBJ = $(patsubst %.c,build/asan/obj/%.o,$(1))

build/asan/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(SAN_FLAGS) $(PKG_CFLAGS) -c -o $@ $<

build/asan/sluice: $(call SAN_OBJ,$(LIB_SRC) $(CLI_SRC) $(SAN_SRC))
	@mkdir -p build/asan
	$(CC) $(SAN_FLAGS) -o $@ $^ $(LIBS)

.SECONDARY: $(call SAN_OBJ,$(wildcard tests/test_*.c))

# cli/ is not in the library: the report test links cli/report.c itself
build/asan/test_report_runs: $(call SAN_OBJ,cli/report.c)

build/asan/test_%: $(call SAN_OBJ,tests/test_%.c $(LIB_SRC) $(SAN_SRC)) tests/tap.h
	@mkdir -p build/asan
	$(CC) $(SAN_FLAGS) -o $@ $(filter %.o,$^) $(LIBS)

# libFuzzer targets (tests/fuzz/README.md): `make fuzz` runs each for FUZZ_SECONDS.
FUZZ         := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -O1 -g -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer \
                -fno-sanitize-recover=undefined
FUZZ_SRC_msg      := base/sl.c proto/msg.c
FUZZ_SRC_enc      := base/sl.c merkle/enc.c merkle/tol.c
FUZZ_SRC_co_reply := base/sl.c $(wildcard merkle/*.c proto/*.c) $(wildcard coordinator/co*.c) coordinator/fiber.c

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_SRC) $(HDRS)
	@mkdir -p build/fuzz
	clang $(CSTD) $(WARN) $(FUZZ_FLAGS) $(PKG_CFLAGS) -o $@ $< $(or $(FUZZ_SRC_$*),$(LIB_SRC)) $(LIBS)

fuzz: $(FUZZ)
	@bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ)

deps:
	@bash scripts/deps.sh

demo: deps build/sluice
	@bash scripts/demo.sh

# A short scripted migration: two local PostgreSQL servers, HAProxy, a
# cluster and sluice control, driven with curl (README: "Migrations").
demo-migration: build/sluice
	@bash scripts/deps.sh --test
	@bash scripts/demo_migration.sh

# Unit tests, then integration tests (real PostgreSQL started by the
# harness, real SQLite files, the ASan+UBSan sluice binary).
#
# prove runs TEST_JOBS test files at once, except TEST_SERIAL: these run
# after all the others, one at a time and alone, because each asserts a time
# bound, a rate or an RSS ratio with little room, or races its processes
# (test_hostile_peer failed once beside two others; test_binary connects
# right after pg_reload_conf(), which does not wait, and failed once beside
# another), or, like the benchmark, loads both cores: a neighbour's load
# would make it fail now and then.
# A test not named by any --rules is what prove runs alone at the end, so
# every other test gets a par= rule of its own (a seq= rule would still run
# beside the parallel group). TEST_LONG (the slowest, 20 s and more) start
# first, so that the parallel slots end at about the same time. Every test
# starts its own servers on ports reserved by harness.free_port, in
# temporary directories of its own.
TEST_JOBS   ?= 2
TEST_SERIAL := $(addprefix tests/integration/,test_many_jobs.py test_soak.py \
                 test_control_abort.py test_control_e2e.py test_loadgen.py \
                 test_loadgen_control.py test_curve.py test_hostile_peer.py \
                 test_bench_smoke.sh)
TEST_LONG   := $(addprefix tests/integration/,test_chaos.py test_control_cutover_edges.py \
                 test_control_crash.py test_cluster_hardening.py test_random_cluster.sh \
                 test_random.py test_huge_values.py test_secrets.py test_demo_migration.sh \
                 test_values_hardening.py test_control_changes.py \
                 test_verify_changes_restart.py test_verify_changes_orphans.py \
                 test_quick_answers.py test_dense.py test_repair.py test_replica_lag.py \
                 test_merge_adversarial.py)
TEST_FILES   = $(addprefix build/asan/,$(UNIT)) \
               $(wildcard tests/integration/test_*.py tests/integration/test_*.sh)
TEST_PAR     = $(filter $(TEST_FILES),$(TEST_LONG)) \
               $(filter-out $(TEST_SERIAL) $(TEST_LONG),$(TEST_FILES))

test:
	@bash scripts/deps.sh --test
	@$(MAKE) --no-print-directory -j2 build/asan/sluice $(addprefix build/asan/,$(UNIT))
	SLUICE=$(CURDIR)/build/asan/sluice prove -j$(TEST_JOBS) --timer --exec '' \
	    $(foreach t,$(TEST_PAR),--rules='par=$(t)') $(TEST_FILES)

unit: $(addprefix build/asan/,$(UNIT))
	prove --exec '' $^

# The randomized differential test alone, as long as asked:
# make test-random SCENARIOS=10000 [SEED=n] [HOSTILE_SHARE=0.25]
SCENARIOS ?= 2000
test-random:
	@bash scripts/deps.sh --test
	@$(MAKE) --no-print-directory build/asan/sluice
	SLUICE=$(CURDIR)/build/asan/sluice SCENARIOS=$(SCENARIOS) prove -v --exec '' \
	    tests/integration/test_random.py

# The randomized differential test between MariaDB and PostgreSQL:
# make test-mysql-random SCENARIOS=200 [SEED=n]
test-mysql-random:
	@bash scripts/deps.sh --test
	@$(MAKE) --no-print-directory build/asan/sluice
	SLUICE=$(CURDIR)/build/asan/sluice SCENARIOS=$(SCENARIOS) prove -v --exec '' \
	    tests/integration/test_mysql_random.py

# The randomized repair round trip (diff --fix-sql, apply, diff again):
# make test-repair-random SCENARIOS=200 [SEED=n]
test-repair-random:
	@bash scripts/deps.sh --test
	@$(MAKE) --no-print-directory build/asan/sluice
	SLUICE=$(CURDIR)/build/asan/sluice SCENARIOS=$(SCENARIOS) prove -v --exec '' \
	    tests/integration/test_repair_random.py

# The soak test at full length: 1,000 jobs and 100 cancelled ones against
# one coordinator, alone (make test runs it too).
soak:
	@bash scripts/deps.sh --test
	@$(MAKE) --no-print-directory build/asan/sluice
	SLUICE=$(CURDIR)/build/asan/sluice SOAK_JOBS=1000 SOAK_CANCELS=100 prove -v --exec '' \
	    tests/integration/test_soak.py

# The chaos suite: one fault per case injected into a cdc migration behind
# HAProxy under write load (bench/README.md, "chaos.py"); full form.
chaos:
	@bash scripts/deps.sh --test
	@$(MAKE) --no-print-directory build/asan/sluice
	SLUICE=$(CURDIR)/build/asan/sluice /usr/bin/python3 bench/chaos.py $(CHAOS_ARGS)

bench: deps build/sluice
	@bash scripts/deps.sh --test
	/usr/bin/python3 bench/bench.py
	/usr/bin/python3 bench/continuous.py

format:
	clang-format -i $(LIB_SRC) $(CLI_SRC) $(HDRS) tests/*.c tests/*.h

clean:
	rm -rf build
