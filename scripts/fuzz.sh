#!/usr/bin/env bash
# `make fuzz [SECONDS=600]`: fuzz decode + validate with cargo-fuzz (libFuzzer),
# starting from the committed seeds (valid messages and near misses of each field
# rule, fuzz/seeds/decode) and a dictionary of the contract's field names and
# values (fuzz/decode.dict). What it finds grows fuzz/corpus/decode (not committed).
# The machine's Rust is stable; RUSTC_BOOTSTRAP lets cargo-fuzz use the sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/corpus/decode
cargo fuzz run decode fuzz/corpus/decode fuzz/seeds/decode -- \
  -dict=fuzz/decode.dict -max_total_time="$SECONDS_TO_RUN" -max_len=300000 -rss_limit_mb=2048
