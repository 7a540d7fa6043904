# Builds everything `docker compose up` needs; no step on the host.
#
#   target `plugin`      – the Grafana plugin folder (dist/) in /dist: plugin.json,
#                          module.js (frontend, built in the `frontend` stage),
#                          gpx_mongopulse_linux_<arch> (backend), logo, README
#   target `mongopulsed` – the daemon image
#
# Binaries are linked statically against musl so one build runs in Grafana's
# Alpine- and Ubuntu-based images alike.

FROM rust:1.95-alpine AS backend
# librdkafka (the Kafka source) is built from source by the rdkafka crate: a C/C++
# toolchain, its configure script (bash, perl), and static OpenSSL and zlib for TLS, SASL
# and compression in a static binary.
RUN apk add --no-cache musl-dev make gcc g++ bash perl pkgconf \
    openssl-dev openssl-libs-static zlib-dev zlib-static
ENV OPENSSL_STATIC=1
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo reads every target of the manifest, benches included, even to build the binaries.
COPY benches ./benches
RUN cargo build --release --locked --bins

# The frontend: pkg/ built to one AMD module.js (React and @grafana/* are Grafana's).
FROM node:20-alpine AS frontend
WORKDIR /src/pkg
COPY pkg/package.json pkg/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY pkg/tsconfig.json pkg/rollup.config.mjs ./
COPY pkg/src ./src
RUN npm run build

FROM alpine:3.20 AS plugin
ARG TARGETARCH=amd64
COPY plugin.json README.md CHANGELOG.md /dist/
COPY img /dist/img
COPY --from=frontend /src/pkg/dist/module.js /src/pkg/dist/module.js.map /dist/
COPY --from=backend /src/target/release/gpx_mongopulse /dist/gpx_mongopulse_linux_${TARGETARCH}
# Grafana looks for <executable>_<os>_<arch>; the compose service copies /dist into a volume.
CMD ["sh", "-c", "rm -rf /out/* && cp -R /dist/. /out/ && ls -l /out"]

FROM alpine:3.20 AS mongopulsed
RUN apk add --no-cache ca-certificates && adduser -D -H -u 10001 pulse
COPY --from=backend /src/target/release/mongopulsed /usr/local/bin/mongopulsed
USER pulse
EXPOSE 8428
ENTRYPOINT ["/usr/local/bin/mongopulsed"]
CMD ["run"]
