# ngxprobe: two commands on a fresh machine (as root):
#   make demo   builds the test nginx, reproduces a 499 and diagnoses it
#   make test   installs what the tests need, builds both test nginx, runs every test
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
export CGO_ENABLED := 0
GO ?= go

.PHONY: all build install deps nginx demo test vet bench clean

PREFIX ?= /usr/local

all: build

# -buildvcs=true: `ngxprobe version` names the commit, whatever GOFLAGS says.
build:
	$(GO) build -buildvcs=true -o bin/ngxprobe ./cmd/ngxprobe

# make install puts ngxprobe in $(PREFIX)/bin (/usr/local/bin), on root's PATH.
install: build
	install -D -m 0755 bin/ngxprobe $(DESTDIR)$(PREFIX)/bin/ngxprobe
	@echo "installed $(DESTDIR)$(PREFIX)/bin/ngxprobe"

deps:
	@bash internal/nginxtest/setup-deps.sh deb vm

nginx: deps
	@bash internal/nginxtest/build-nginx.sh o2 >/dev/null
	@bash internal/nginxtest/build-nginx.sh lto >/dev/null
	@bash internal/nginxtest/build-deb.sh >/dev/null

# The demo needs only what builds the test nginx: nothing else is installed.
demo:
	@bash internal/nginxtest/setup-deps.sh build
	@$(GO) build -buildvcs=true -o bin/ngxprobe ./cmd/ngxprobe
	@bash internal/nginxtest/build-nginx.sh o2 >/dev/null
	@$(GO) run ./internal/demo --ngxprobe bin/ngxprobe

vet:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

# The kernel matrix boots QEMU guests (TCG): it runs after the rest, so that
# its CPU load does not slow the timing-sensitive e2e tests beside it.
test: nginx vet
	$(GO) test -count=1 -timeout 30m $$($(GO) list ./... | grep -v /e2e/kernels)
	$(GO) test -count=1 -timeout 40m ./e2e/kernels

bench: nginx build
	bash bench/run.sh
	bash bench/hitcost.sh
	bash bench/watch.sh
	bash bench/events.sh
	$(GO) test ./bench -run '^$$' -bench Unwind -benchtime 20000x
	$(GO) test ./bench -run '^$$' -bench ModuleMemory -benchtime 1x
	$(GO) test ./bench -run '^$$' -bench PackagedAttach -benchtime 3x
	$(GO) test ./e2e/kernels -run '^$$' -bench Kernels -benchtime 1x

clean:
	rm -rf bin
