# pop3bridge — one non-recursive Makefile.
#   make            build ./pop3bridge (after `make layers`, the include rule)
#   make check      install missing deps (as root), build, run every test
#   make fuzz       build the libFuzzer harnesses, run each FUZZ_SECONDS (60)
#   make reliability  the whole fault matrix, written to RELIABILITY.md
#   make demo       install missing deps (as root), build, run a real sync on loopback
#   make install    PREFIX=/usr/local DESTDIR= SENDMAIL_LINK=   (1: SBINDIR/sendmail -> pop3bridge)
#   make clean

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
DATADIR ?= $(PREFIX)/share
SBINDIR ?= $(PREFIX)/sbin
MANDIR  ?= $(DATADIR)/man
UNITDIR ?= $(PREFIX)/lib/systemd
SENDMAIL_LINK ?=

CC      ?= cc
PKGS    := sqlite3 libconfuse gnutls
CFLAGS  ?= -O2 -g
# libetpan is linked by hand: its pkg-config links a non-PIE binary and
# pulls in -ldb-5.3 -llockfile (doc/DESIGN.md, libetpan trap 10).
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS  = -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fPIE -I. $(PKG_CFLAGS) $(CFLAGS)
# -z now: every symbol bound once at start, in the daemon, not again by each
# forked pass on its first call (the shared libraries bind now already).
ALL_LDFLAGS = -pie -Wl,-z,relro,-z,now $(LDFLAGS)
LIBS        = $(PKG_LIBS) -letpan -lgnutls -lcrypt

SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# Unit tests link every object but main.c.
SRCS        := $(sort $(wildcard lib/*.c conf/*.c store/*.c bridge/*.c))
NOMAIN_SRCS := $(filter-out bridge/main.c,$(SRCS))
TEST_SRCS   := $(sort $(wildcard tests/unit/test_*.c))

OBJS            := $(SRCS:%.c=build/rel/%.o)
NOMAIN_OBJS     := $(NOMAIN_SRCS:%.c=build/rel/%.o)
SAN_OBJS        := $(SRCS:%.c=build/asan/%.o)
SAN_NOMAIN_OBJS := $(NOMAIN_SRCS:%.c=build/asan/%.o)
TESTS           := $(TEST_SRCS:tests/unit/%.c=build/rel/tests/%)
SAN_TESTS       := $(TEST_SRCS:tests/unit/%.c=build/asan/tests/%)

# The fault tests' LD_PRELOAD shim (tests/faults/faultinject.c).
FAULT_SHIM := build/faultinject.so

# libFuzzer harnesses (tests/fuzz/fuzz_NAME.c): every object but main.c,
# built again by clang with coverage, ASan and UBSan.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer
FUZZ_CFLAGS   = -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fPIE -I. $(PKG_CFLAGS) \
                -O1 -g $(FUZZ_SAN)
FUZZ_SRCS    := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZERS      := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
FUZZ_OBJS    := $(NOMAIN_SRCS:%.c=build/fuzz/obj/%.o)

.PHONY: all check demo bench install uninstall clean deps asan unit-tests layers \
	fuzzers fuzz reliability man-lint
all: layers pop3bridge

# lib/ < conf/ < store/ < bridge/: no folder includes one above it, no store
# backend another backend (scripts/check-layers).
layers:
	@./scripts/check-layers

pop3bridge: $(OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $(OBJS) $(LIBS)

build/asan/pop3bridge: $(SAN_OBJS)
	$(CC) $(ALL_LDFLAGS) $(SAN_FLAGS) -o $@ $(SAN_OBJS) $(LIBS)

build/rel/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

build/asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -O1 -MMD -MP -c -o $@ $<

build/rel/tests/%: tests/unit/%.c $(NOMAIN_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(NOMAIN_OBJS) $(LIBS)

build/asan/tests/%: tests/unit/%.c $(SAN_NOMAIN_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) $(ALL_LDFLAGS) -o $@ $< $(SAN_NOMAIN_OBJS) $(LIBS)

asan: build/asan/pop3bridge $(SAN_TESTS)
unit-tests: $(TESTS) $(SAN_TESTS)

$(FAULT_SHIM): tests/faults/faultinject.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror -O2 -g -fPIC -shared -o $@ $< -ldl

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_OBJS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -pie -o $@ $< $(FUZZ_OBJS) $(LIBS) -lpthread

fuzzers: $(FUZZERS)

# Each harness FUZZ_SECONDS, two at a time, after its regression inputs
# (tests/fuzz/run; make check runs them for 20 s).
fuzz: fuzzers
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./tests/fuzz/run

# Dependencies are installed only when we can (root); otherwise the build
# says what is missing.
deps:
	@if [ "$$(id -u)" = 0 ]; then ./scripts/install-deps; else ./scripts/install-deps || true; fi

check: deps
	$(MAKE) all asan unit-tests $(FAULT_SHIM) fuzzers
	./tests/run

# The full fault matrix (network cuts, disk faults, restarts, hostile
# peers, longer fuzzing) at full counts; RELIABILITY.md is written from its
# results by scripts/reliability. Each harness fuzzes for 600 CPU seconds
# (FUZZ_CPU_SECONDS=N to change; FUZZ_SECONDS=N for wall time instead).
reliability: deps
	$(MAKE) all asan $(FAULT_SHIM) fuzzers
	./scripts/reliability

demo: deps
	$(MAKE) all
	./scripts/demo

# Not a test: pop3bridge against mpop, fetchmail and getmail6, as ratios.
bench: all
	./scripts/install-deps --bench
	./bench/run

# The system unit runs as the user pop3bridge: made here when missing (as
# root, installing for real); with DESTDIR, or not root, the command is
# printed for whoever installs the tree.
ADD_USER = useradd --system --user-group --home-dir /var/lib/pop3bridge --no-create-home \
	--shell /usr/sbin/nologin pop3bridge

install: pop3bridge
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/doc/pop3bridge \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
	    $(DESTDIR)$(UNITDIR)/system $(DESTDIR)$(UNITDIR)/user
	install -m 755 pop3bridge $(DESTDIR)$(BINDIR)/pop3bridge
	install -m 644 doc/pop3bridge.1 $(DESTDIR)$(MANDIR)/man1/pop3bridge.1
	install -m 644 doc/pop3bridge.conf.5 $(DESTDIR)$(MANDIR)/man5/pop3bridge.conf.5
	install -m 644 conf/pop3bridge.conf.example $(DESTDIR)$(DATADIR)/doc/pop3bridge/
	install -m 644 README.md $(DESTDIR)$(DATADIR)/doc/pop3bridge/
	sed 's|/usr/local|$(PREFIX)|g' conf/pop3bridge.service \
	    >$(DESTDIR)$(UNITDIR)/system/pop3bridge.service
	sed 's|/usr/local|$(PREFIX)|g' conf/pop3bridge-user.service \
	    >$(DESTDIR)$(UNITDIR)/user/pop3bridge.service
	chmod 644 $(DESTDIR)$(UNITDIR)/system/pop3bridge.service \
	    $(DESTDIR)$(UNITDIR)/user/pop3bridge.service
	if [ -n "$(SENDMAIL_LINK)" ]; then \
		install -d $(DESTDIR)$(SBINDIR) && \
		ln -sf $(BINDIR)/pop3bridge $(DESTDIR)$(SBINDIR)/sendmail; \
	fi
	@if id -u pop3bridge >/dev/null 2>&1; then :; \
	elif [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
		echo "$(ADD_USER)"; $(ADD_USER); \
	else \
		echo "make install: create the system user the unit runs as:"; \
		echo "  $(ADD_USER)"; \
	fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/pop3bridge $(DESTDIR)$(MANDIR)/man1/pop3bridge.1 \
	    $(DESTDIR)$(MANDIR)/man5/pop3bridge.conf.5
	rm -rf $(DESTDIR)$(DATADIR)/doc/pop3bridge
	rm -f $(DESTDIR)$(UNITDIR)/system/pop3bridge.service \
	    $(DESTDIR)$(UNITDIR)/user/pop3bridge.service
	if [ -L $(DESTDIR)$(SBINDIR)/sendmail ]; then rm -f $(DESTDIR)$(SBINDIR)/sendmail; fi

# The man pages: clean under mandoc's lint (warnings and above; its style
# notes about manuals not installed here depend on the machine).
man-lint:
	mandoc -T lint -W warning doc/pop3bridge.1 doc/pop3bridge.conf.5

clean:
	rm -rf build pop3bridge

-include $(OBJS:.o=.d) $(SAN_OBJS:.o=.d) $(FUZZ_OBJS:.o=.d)
