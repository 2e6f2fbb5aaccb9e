# syntax=docker/dockerfile:1
#
# The tollbridge image: one statically linked binary (operator, proxy and CLI) on an empty
# base, run as a non-root numeric user.
#
#   docker build --platform linux/amd64 --build-arg VERSION=0.1.0 \
#       -t ghcr.io/tollbridge-dev/tollbridge:0.1.0 .
#
# Without a Docker engine, `scripts/image build` makes the same image with buildah, offline,
# from a binary built on the host (docs/install-image.md).
#
# What the runtime image holds, and nothing else:
#   /tollbridge                              the binary (glibc, statically linked, static-pie)
#   /etc/ssl/certs/ca-certificates.crt       Debian's CA bundle (TLS to the AWS and Azure APIs)
#   /etc/nsswitch.conf                       "hosts: files dns": /etc/hosts before DNS, as on
#                                            any glibc system (without the file glibc asks
#                                            DNS first, so a Pod's hostAliases would not apply)

ARG RUST_IMAGE=rust:1-bookworm

# ---------------------------------------------------------------------------------------
# builder
# ---------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

WORKDIR /src
COPY . .

# crt-static links glibc statically; --target keeps RUSTFLAGS off the build scripts and proc
# macros (they stay dynamic, as they must). The linker warns that getaddrinfo and getpwuid_r
# "require at runtime the shared libraries from the glibc version used for linking": those
# warnings are expected. Name resolution only needs glibc's built-in `files` and `dns`
# services, which a static glibc (>= 2.34) carries; see docs/install-image.md. The check after
# the build fails it if the binary still names a program interpreter or a shared library.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    set -eux; \
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked -p tollbridge --target x86_64-unknown-linux-gnu; \
    install -D -m 0555 target/x86_64-unknown-linux-gnu/release/tollbridge /out/tollbridge; \
    if readelf -lW /out/tollbridge | grep -q 'program interpreter' \
        || readelf -dW /out/tollbridge | grep -q '(NEEDED)'; then \
        echo "tollbridge is not statically linked" >&2; readelf -dW /out/tollbridge >&2; exit 1; \
    fi; \
    /out/tollbridge version; \
    install -D -m 0444 /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt; \
    printf 'hosts: files dns\n' > /out/etc/nsswitch.conf; \
    chmod 0444 /out/etc/nsswitch.conf

# ---------------------------------------------------------------------------------------
# runtime
# ---------------------------------------------------------------------------------------
FROM scratch

ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="tollbridge" \
      org.opencontainers.image.description="Kubernetes Gateway API operator for Amazon API Gateway, Azure API Management and a built-in proxy" \
      org.opencontainers.image.source="https://github.com/tollbridge-dev/tollbridge" \
      org.opencontainers.image.url="https://github.com/tollbridge-dev/tollbridge" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

COPY --from=builder /out/ /

ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/tollbridge"]
