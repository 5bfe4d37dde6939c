#!/usr/bin/env bash
# Builds the web app's hydration bundle into target/site/pkg (powertab.js, powertab_bg.wasm)
# with plain cargo and wasm-bindgen-cli; no cargo-leptos.
#  1. The wasm32 target from rustup; when rustup cannot add it, Debian's rustc-web with its
#     standard library sources, unpacked into .local/rustc-web, building std itself
#     (-Zbuild-std, RUSTC_BOOTSTRAP=1).
#  2. wasm-bindgen-cli at exactly the version in Cargo.lock (cargo install, cached by version).
#  3. wasm-opt when present (npm package `binaryen`); skipped otherwise.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
log() { printf '[wasm] %s\n' "$*" >&2; }

version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
[ -n "$version" ] || { log "wasm-bindgen not found in Cargo.lock"; exit 1; }

cargo_cmd=(cargo)
build_std=()
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  if ! rustup target add wasm32-unknown-unknown >&2; then
    log "rustup cannot add wasm32-unknown-unknown: using Debian's rustc-web"
    web="$repo/.local/rustc-web"
    if [ ! -x "$web/usr/bin/rustc-web" ] && [ -z "$(find "$web" -name rustc -path '*bin*' 2>/dev/null | head -n 1)" ]; then
      mkdir -p "$web/debs"
      (cd "$web/debs" &&
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
        apt-get download rustc-web cargo-web libstd-rust-web-dev libstd-rust-web-1.96 rust-web-src libllvm22 lld-22 >&2)
      for deb in "$web"/debs/*.deb; do dpkg -x "$deb" "$web"; done
    fi
    rustc_bin=$(find "$web" -type f -name rustc -path '*bin*' | head -n 1)
    cargo_bin=$(find "$web" -type f -name cargo -path '*bin*' | head -n 1)
    export LD_LIBRARY_PATH="$(find "$web" -name '*.so*' -printf '%h\n' | sort -u | paste -sd:):${LD_LIBRARY_PATH:-}"
    export PATH="$(dirname "$(find "$web" -name 'rust-lld' -o -name 'lld' | head -n 1)"):$PATH"
    export RUSTC="$rustc_bin" RUSTC_BOOTSTRAP=1
    cargo_cmd=("$cargo_bin")
    build_std=(-Zbuild-std=std,panic_abort)
  fi
fi

bindgen="$repo/.local/wasm-bindgen-$version/bin/wasm-bindgen"
if command -v wasm-bindgen >/dev/null && [ "$(wasm-bindgen --version | awk '{print $2}')" = "$version" ]; then
  bindgen=$(command -v wasm-bindgen)
elif [ ! -x "$bindgen" ]; then
  log "installing wasm-bindgen-cli $version (once; cached in .local/)"
  cargo install wasm-bindgen-cli --version "$version" --root "$repo/.local/wasm-bindgen-$version" >&2
fi

log "building the frontend for wasm32"
"${cargo_cmd[@]}" build "${build_std[@]}" -p powertab-frontend --lib --target wasm32-unknown-unknown \
  --no-default-features --features hydrate --profile wasm-release >&2
mkdir -p target/site/pkg
"$bindgen" --target web --no-typescript --out-dir target/site/pkg --out-name powertab \
  target/wasm32-unknown-unknown/wasm-release/powertab_frontend.wasm
if command -v wasm-opt >/dev/null; then
  wasm-opt -Oz target/site/pkg/powertab_bg.wasm -o target/site/pkg/powertab_bg.wasm || log "wasm-opt failed; keeping the unoptimised file"
fi
true
log "built target/site/pkg ($(du -h target/site/pkg/powertab_bg.wasm | cut -f1) wasm)"
