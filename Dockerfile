# syntax=docker/dockerfile:1
#
# The s3-migration image: `commander` and `executor` on a minimal, shell-less,
# non-root runtime.
#
#   docker build -t s3-migration .
#   docker run --rm s3-migration executor --mode copy
#   docker run --rm s3-migration commander run -s SRC -t DST
#   docker run --rm -v "$PWD/config.yml:/config/config.yml:ro" s3-migration commander status
#
# CI (scripts/test-extra) runs the builder's `# ci-build-command` RUN line
# verbatim in the checkout and checks that every `COPY --from=builder` source
# below exists in that build's output; tests/tests/deploy.rs checks the same
# names statically. Keep those two markers and the paths in step.

############################ builder ############################
# Pinned toolchain (workspace rust-version is 1.94.1). Debian bookworm matches
# the runtime's glibc, so the binaries link against what the runtime ships.
# The slim image already has gcc and libc6-dev, which the bundled SQLite
# (rusqlite) and aws-lc-sys (rustls' crypto provider) compile with.
#
# Both base images are pinned by digest (the multi-platform index, so amd64 and
# arm64 builds both resolve), not only by tag: a tag can be re-pushed, and a
# fleet must run the bytes that were tested. To bump one, resolve the tag's
# current index digest and replace the `@sha256:` part (keep the tag for
# readers), then rebuild and run the tests:
#   docker buildx imagetools inspect rust:1.95.0-slim-bookworm --format '{{json .Manifest.Digest}}'
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot --format '{{json .Manifest.Digest}}'
# (or `crane digest IMAGE`). Bump the runtime image for its security fixes at
# least monthly; the toolchain when the workspace's rust-version moves.
FROM rust:1.95.0-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# Dependency layer, cached until a manifest or Cargo.lock changes: copy only
# the manifests, give every workspace member an empty stub source, and build.
# This compiles all third-party crates into target/ in one layer. We chose this
# classic trick over BuildKit cache mounts because it also works with the
# legacy builder and because CI can run the final build command as-is.
# Every workspace member's Cargo.toml must be copied here (deploy.rs checks it).
COPY Cargo.toml Cargo.lock ./
COPY common/Cargo.toml common/
COPY commander/Cargo.toml commander/
COPY executor/Cargo.toml executor/
COPY tests/Cargo.toml tests/
COPY bench/Cargo.toml bench/
# ci-stub-sources
RUN mkdir -p common/src commander/src executor/src tests/src bench/src \
 && touch common/src/lib.rs tests/src/lib.rs bench/src/lib.rs \
 && echo 'fn main() {}' > commander/src/main.rs \
 && echo 'fn main() {}' > executor/src/main.rs
RUN cargo build --release --locked -p commander -p executor

# The real sources. COPY keeps the files' original mtimes, which can be older
# than the stub build above; touching the crate roots makes cargo see them as
# changed, so it rebuilds our three crates (and only those) instead of shipping
# the stubs.
COPY common/src common/src
COPY commander/src commander/src
COPY executor/src executor/src
RUN touch common/src/lib.rs commander/src/main.rs executor/src/main.rs
# ci-build-command
# (kept apart from the touch above so CI can run this exact line)
# hadolint ignore=DL3059
RUN cargo build --release --locked -p commander -p executor

############################ runtime ############################
# distroless/cc: glibc, libgcc, CA certificates and tzdata; no shell, no
# package manager. The `nonroot` tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
LABEL org.opencontainers.image.title="s3-migration" \
      org.opencontainers.image.description="Queue-driven S3 migration: commander (lists and enqueues) and executor (copies)" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /src/target/release/commander /src/target/release/executor /usr/local/bin/

# Both programs read every setting from the environment (seed names such as
# QUEUE_NUM, COPY_REGION_NAME, plus the standard AWS_* chain; on ECS the task
# role supplies credentials) and from ./config.yml and ./.env when present.
# The working directory is /config, so mounting a config.yml (or a directory
# holding config.yml and .env) there is picked up without any flag; `-c PATH`
# names another file.
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    TMPDIR=/tmp
WORKDIR /config

# Scratch space. On Fargate with a read-only root filesystem the task
# definition mounts an ephemeral volume here; declaring it makes ECS copy the
# image's directory permissions (distroless /tmp is 1777) onto that volume, so
# the non-root user can write to it.
VOLUME ["/tmp"]

USER 65532:65532

# No wrapper and no shell: the first argument is the program, looked up on
# PATH, so `docker run IMAGE executor --mode copy` and
# `docker run IMAGE commander run ...` both work, and ECS task definitions set
# `Command: [executor, ...]`. The binaries are PID 1 and handle SIGTERM/SIGINT
# themselves (the ECS task definition also enables an init process).
ENTRYPOINT []
CMD ["executor", "--help"]
