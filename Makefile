# Roost: make build | test | torture | demo | deb | bench | fuzz
GO      ?= go
BIN     := bin
FUZZTIME ?= 30s

.PHONY: all build test torture vet demo deb bench fuzz clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

# Every test: unit, conformance, fuzz seeds, real slapd/Postfix/clients.
test: build vet
	$(GO) test -race -count=1 -timeout 25m ./...

# Long fault tests against the real binaries (docs/faults.md): hundreds of
# kill -9s, a 10-minute soak. make test runs their short forms.
torture: build
	$(GO) test -race -count=1 -timeout 60m -v ./torture/ -args -torture

demo: build
	./deploy/demo/run

# Debian package roost_<version>_<arch>.deb (deploy/deb/build).
deb: build
	./deploy/deb/build

# Roost vs Dovecot side by side, then Go micro-benchmarks vs the last run.
# BENCHFLAGS passes options, e.g. make bench BENCHFLAGS="--smoke".
bench: build
	./bench/run $(BENCHFLAGS)

# Run each fuzz target for FUZZTIME.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

clean:
	rm -rf $(BIN) var roost_*.deb
